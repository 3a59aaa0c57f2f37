"""Launch the 1x1 (GEMM) forward kernel on one batch chunk, through tensor descriptors when it can."""

from __future__ import annotations

import torch
import triton

from ..arithmetic import ConvProblem
from ..config import KernelConfig
from ..kernels import _conv2d_fwd_1x1_kernel
from ..runtime import is_interpreted
from .common import LaunchFlags, bias_arguments
from .epilogue import NO_EPILOGUE, Epilogue

try:  # host-side tensor descriptors: Triton >= 3.4
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # pragma: no cover - depends on the installed Triton
    TensorDescriptor = None

KERNEL = _conv2d_fwd_1x1_kernel


def _descriptors_usable(device: torch.device) -> bool:
    """TMA exists from Hopper (sm_90) on; the interpreter emulates descriptors anywhere."""
    if TensorDescriptor is None:
        return False
    if is_interpreted(KERNEL):
        return True
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 9


def _aligned(*tensors: torch.Tensor) -> bool:
    return all(t.data_ptr() % 16 == 0 and all(s * t.element_size() % 16 == 0 for s in t.stride()[:-1]) for t in tensors)


def gemm_views(
    x: torch.Tensor, weight: torch.Tensor, y: torch.Tensor, problem: ConvProblem
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """[M, C], [K, C] and [M, K] views of input, weight and output when they are dense matrices with
    a unit inner stride and 16-byte aligned rows, the shapes a tensor descriptor (TMA) can address."""
    if problem.stride != (1, 1) or x.element_size() not in (2, 4) or not _descriptors_usable(x.device):
        return None
    n, c, h, w = x.shape
    k = weight.shape[0]
    dense_nhwc = (h * w * c, 1, w * c, c)
    if x.stride() != dense_nhwc or y.stride() != (h * w * k, 1, w * k, k) or weight.stride(1) != 1:
        return None
    views = (x.permute(0, 2, 3, 1).reshape(n * h * w, c), weight[:, :, 0, 0], y.permute(0, 2, 3, 1).reshape(-1, k))
    return views if _aligned(*views) else None


def launch(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    y: torch.Tensor,
    problem: ConvProblem,
    config: KernelConfig,
    flags: LaunchFlags,
    epilogue: Epilogue = NO_EPILOGUE,
) -> None:
    m = x.shape[0] * problem.p * problem.q
    grid = (triton.cdiv(m, config.block_m) * triton.cdiv(problem.k, config.block_n),)
    views = None if epilogue.reads_or_writes_extra else gemm_views(x, weight, y, problem)
    if views is not None:
        x_mat, w_mat, y_mat = views
        x_arg = TensorDescriptor.from_tensor(x_mat, [config.block_m, config.block_k])
        w_arg = TensorDescriptor.from_tensor(w_mat, [config.block_n, config.block_k])
        y_arg = TensorDescriptor.from_tensor(y_mat, [config.block_m, config.block_n])
    else:
        x_arg, w_arg, y_arg = x, weight, y
    bias_ptr, bias_stride = bias_arguments(bias, weight)
    KERNEL[grid](
        x_arg,
        w_arg,
        bias_ptr,
        y_arg,
        *epilogue.pointers(y),
        x.shape[0],
        problem.k,
        problem.p,
        problem.q,
        *x.stride(),
        weight.stride(0),
        weight.stride(1),
        bias_stride,
        *y.stride(),
        *epilogue.residual_strides(),
        C=problem.c,
        STRIDE_H=problem.stride[0],
        STRIDE_W=problem.stride[1],
        HAS_BIAS=bias is not None,
        **epilogue.kwargs(),
        USE_DESCRIPTORS=views is not None,
        INDEX_64=flags.index_64,
        **flags.numeric_kwargs(),
        **config.gemm_kwargs(),
    )
