"""Triton kernels, one file per algorithm, and the helpers they share (`common`). Only `@triton.jit`
code lives here, and the NamedTuples their grouped constexprs take (`constexprs`); launchers are in
`ops/`.

The kernels load on first use (PEP 562 `__getattr__`): `from tritonconv import kernels` is cheap, and
`kernels._conv2d_fwd_implicit_gemm_kernel` imports its module, and Triton with it, the first time it
is asked for. So `import tritonconv` does not import Triton (about 0.3 s).
"""

import importlib

# Each kernel -> the module that defines it.
_MODULES = {
    "_activation_grad_kernel": "epilogue",
    "_causal_conv1d_update_kernel": "causal_update",
    "_causal_seq_kernel": "causal_packed",
    "_causal_seq_wgrad_kernel": "causal_packed",
    "_causal_varlen_kernel": "causal_varlen",
    "_conv1d_depthwise_fwd_kernel": "depthwise_1d",
    "_conv1d_depthwise_wgrad_kernel": "depthwise_1d",
    "_conv2d_bias_grad_kernel": "wgrad",
    "_conv2d_dgrad_kernel": "dgrad",
    "_conv2d_dgrad_phased_kernel": "dgrad_phased",
    "_conv2d_fwd_1x1_kernel": "conv1x1_fwd",
    "_conv2d_fwd_depthwise_kernel": "depthwise_fwd",
    "_conv2d_fwd_grouped_tile_kernel": "grouped_tile_fwd",
    "_conv2d_fwd_implicit_gemm_kernel": "implicit_gemm_fwd",
    "_conv2d_fwd_tma_kernel": "tma_fwd",
    "_conv2d_wgrad_depthwise_kernel": "wgrad",
    "_conv2d_wgrad_partial_kernel": "wgrad",
    "_conv2d_wgrad_tma_kernel": "tma_wgrad",
    "_conv3d_dgrad_kernel": "conv3d",
    "_conv3d_fwd_depthwise_kernel": "conv3d",
    "_conv3d_fwd_kernel": "conv3d",
    "_conv3d_wgrad_depthwise_kernel": "conv3d",
    "_conv3d_wgrad_partial_kernel": "conv3d",
    "_sum_splits_kernel": "wgrad",
}
__all__ = sorted(_MODULES)


def __getattr__(name: str) -> object:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    kernel = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = kernel  # the next lookup is a plain attribute
    return kernel


def __dir__() -> list[str]:
    return sorted({*globals(), *_MODULES})
