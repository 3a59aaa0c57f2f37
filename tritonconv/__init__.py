"""tritonconv: Triton kernels for 2-D convolution, drop-in for PyTorch.

Importing this package never touches CUDA. To run on CPU tensors (slowly, for testing), set
TRITON_INTERPRET=1 before the import.
"""

from .arithmetic import ConvProblem, make_problem, problem_from_tensors
from .dispatch import explain
from .functional import Conv2dFunction, conv2d
from .nn import Conv2d
from .tuning.model import tune_model

__version__ = "0.1.0"

__all__ = [
    "Conv2d",
    "Conv2dFunction",
    "ConvProblem",
    "__version__",
    "conv2d",
    "explain",
    "make_problem",
    "problem_from_tensors",
    "tune_model",
]
