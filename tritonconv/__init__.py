"""tritonconv: Triton kernels for 1-D, 2-D and 3-D convolution, drop-in for PyTorch.

Importing this package never touches CUDA. To run on CPU tensors (slowly, for testing), set
TRITON_INTERPRET=1 before the import.
"""

from ._version import __version__
from .frontend import library_ops  # registers the tritonconv:: custom ops torch.compile sees
from .frontend.aten import disable_aten, enable_aten, use_aten
from .frontend.call_counts import reset_stats, stats
from .frontend.decode import causal_conv1d_update
from .frontend.functional import Conv2dFunction, conv1d, conv2d
from .frontend.nn import Conv1d, Conv2d, Conv3d, ConvTranspose1d, ConvTranspose2d, ConvTranspose3d
from .frontend.sequence import causal_conv1d, causal_conv1d_fn
from .frontend.transposed import conv_transpose1d, conv_transpose2d, conv_transpose3d, explain_transposed
from .frontend.varlen import causal_conv1d_varlen
from .frontend.volume import Conv3dFunction, conv3d
from .models.patch import PatchReport, patch, patch_torch, patched, unpatch, unpatch_torch
from .models.tune_model import tune_model
from .plan.dispatch import explain
from .problem.arithmetic import ConvProblem, make_problem, problem_from_tensors

__all__ = [
    "Conv1d",
    "Conv2d",
    "Conv2dFunction",
    "Conv3d",
    "Conv3dFunction",
    "ConvProblem",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "ConvTranspose3d",
    "PatchReport",
    "__version__",
    "causal_conv1d",
    "causal_conv1d_fn",
    "causal_conv1d_update",
    "causal_conv1d_varlen",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "disable_aten",
    "enable_aten",
    "explain",
    "explain_transposed",
    "library_ops",
    "make_problem",
    "patch",
    "patch_torch",
    "patched",
    "problem_from_tensors",
    "reset_stats",
    "stats",
    "tune_model",
    "unpatch",
    "unpatch_torch",
    "use_aten",
]
