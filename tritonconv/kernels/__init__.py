"""Triton kernels, one file per algorithm, and the helpers they share (`common`). Only `@triton.jit`
code lives here, and the NamedTuples their grouped constexprs take (`constexprs`); launchers are in
`ops/`."""

from .causal_packed import _causal_seq_kernel, _causal_seq_wgrad_kernel
from .causal_update import _causal_conv1d_update_kernel
from .causal_varlen import _causal_varlen_kernel
from .conv1x1_fwd import _conv2d_fwd_1x1_kernel
from .conv3d import (
    _conv3d_dgrad_kernel,
    _conv3d_fwd_depthwise_kernel,
    _conv3d_fwd_kernel,
    _conv3d_wgrad_depthwise_kernel,
    _conv3d_wgrad_partial_kernel,
)
from .depthwise_1d import _conv1d_depthwise_fwd_kernel, _conv1d_depthwise_wgrad_kernel
from .depthwise_fwd import _conv2d_fwd_depthwise_kernel
from .dgrad import _conv2d_dgrad_kernel
from .dgrad_phased import _conv2d_dgrad_phased_kernel
from .epilogue import _activation_grad_kernel
from .grouped_tile_fwd import _conv2d_fwd_grouped_tile_kernel
from .implicit_gemm_fwd import _conv2d_fwd_implicit_gemm_kernel
from .tma_fwd import _conv2d_fwd_tma_kernel
from .tma_wgrad import _conv2d_wgrad_tma_kernel
from .wgrad import (
    _conv2d_bias_grad_kernel,
    _conv2d_wgrad_depthwise_kernel,
    _conv2d_wgrad_partial_kernel,
    _sum_splits_kernel,
)

__all__ = [
    "_activation_grad_kernel",
    "_causal_conv1d_update_kernel",
    "_causal_seq_kernel",
    "_causal_seq_wgrad_kernel",
    "_causal_varlen_kernel",
    "_conv1d_depthwise_fwd_kernel",
    "_conv1d_depthwise_wgrad_kernel",
    "_conv2d_bias_grad_kernel",
    "_conv2d_dgrad_kernel",
    "_conv2d_dgrad_phased_kernel",
    "_conv2d_fwd_1x1_kernel",
    "_conv2d_fwd_depthwise_kernel",
    "_conv2d_fwd_grouped_tile_kernel",
    "_conv2d_fwd_implicit_gemm_kernel",
    "_conv2d_fwd_tma_kernel",
    "_conv2d_wgrad_depthwise_kernel",
    "_conv2d_wgrad_partial_kernel",
    "_conv2d_wgrad_tma_kernel",
    "_conv3d_dgrad_kernel",
    "_conv3d_fwd_depthwise_kernel",
    "_conv3d_fwd_kernel",
    "_conv3d_wgrad_depthwise_kernel",
    "_conv3d_wgrad_partial_kernel",
    "_sum_splits_kernel",
]
