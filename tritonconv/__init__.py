"""tritonconv: Triton kernels for 1-D, 2-D and 3-D convolution, drop-in for PyTorch.

Importing this package never touches CUDA. To run on CPU tensors (slowly, for testing), set
TRITON_INTERPRET=1 before the import.
"""

from . import library_ops  # registers the tritonconv:: custom ops torch.compile sees
from ._version import __version__
from .arithmetic import ConvProblem, make_problem, problem_from_tensors
from .aten import disable_aten, enable_aten, use_aten
from .dispatch import explain
from .fallback import reset_stats, stats
from .functional import Conv2dFunction, conv1d, conv2d
from .nn import Conv1d, Conv2d, Conv3d, ConvTranspose1d, ConvTranspose2d, ConvTranspose3d
from .patch import PatchReport, patch, patch_torch, patched, unpatch, unpatch_torch
from .transposed import conv_transpose1d, conv_transpose2d, conv_transpose3d, explain_transposed
from .tuning.model import tune_model
from .volume import Conv3dFunction, conv3d

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
