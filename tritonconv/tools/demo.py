"""`make demo`: run a few forward convolutions through Triton and print their error against torch.

Each row names the kernel variant that served it (what `tritonconv.explain` reports).

On a machine without a GPU the kernels run in the Triton interpreter, on small shapes; the times
shown there are interpreter times, not kernel performance. `make bench` times kernels on a GPU.
"""

from __future__ import annotations

import time

import pandas as pd
import torch
import torch.nn.functional as F

from tritonconv import conv2d, explain, problem_from_tensors
from tritonconv.problem.runtime import rerun_under_interpreter_without_gpu

# (layer, n, c, h, w, k, r, s, stride, padding, dilation, groups): small cousins of real layers.
DEMO_LAYERS = [
    ("stem 7x7 s2 (ResNet)", 2, 3, 32, 32, 16, 7, 7, 2, 3, 1, 1),
    ("3x3 (ResNet)", 2, 16, 14, 14, 32, 3, 3, 1, 1, 1, 1),
    ("1x1 s2 downsample", 2, 32, 14, 14, 64, 1, 1, 2, 0, 1, 1),
    ("grouped 3x3 g=8 (ResNeXt)", 2, 32, 14, 14, 32, 3, 3, 1, 1, 1, 8),
    ("depthwise 7x7 (ConvNeXt)", 1, 16, 10, 10, 16, 7, 7, 1, 3, 1, 16),
    ("4x4 'same' dilation 2", 1, 8, 12, 12, 8, 4, 4, 1, "same", 2, 1),
]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def run_layer(layer: tuple, dtype: torch.dtype, channels_last: bool, device: str) -> dict:
    name, n, c, h, w, k, r, s, stride, padding, dilation, groups = layer
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, h, w, generator=gen).to(device, dtype)
    weight = torch.randn(k, c // groups, r, s, generator=gen).to(device, dtype)
    bias = torch.randn(k, generator=gen).to(device, dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    start = time.perf_counter()
    y = conv2d(x, weight, bias, **kwargs)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    ref = F.conv2d(x.cpu().double(), weight.cpu().double(), bias.cpu().double(), **kwargs)
    err = (y.cpu().double() - ref).abs().max().item()
    problem = problem_from_tensors(x, weight, bias, **kwargs)
    return {
        "layer": name,
        "variant": explain(x, weight, bias, **kwargs)["variant"],
        "dtype": str(dtype).removeprefix("torch."),
        "layout": problem.layout,
        "output": "x".join(map(str, y.shape)),
        "gemm (M,N,K)": f"{problem.gemm_m},{problem.gemm_n},{problem.gemm_k}",
        "max_abs_err": err,
        "max_rel_err": err / ref.abs().max().item(),
        "same_layout_as_torch": y.stride() == ref.stride(),
        "wall_ms": 1e3 * seconds,
    }


def main() -> None:
    rerun_under_interpreter_without_gpu("tritonconv.tools.demo")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    where = torch.cuda.get_device_name() if device == "cuda" else "CPU, Triton interpreter (times are not GPU times)"
    print(f"tritonconv demo: forward conv2d against torch float64 on {where}\n")
    rows = [
        run_layer(layer, dtype, channels_last, device)
        for layer in DEMO_LAYERS
        for dtype in DTYPES
        for channels_last in (False, True)
    ]
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_columns", None):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    worst = table.groupby("dtype")["max_rel_err"].max()
    print("\nworst relative error per dtype: " + ", ".join(f"{d} {e:.2e}" for d, e in worst.items()))
    if not table["same_layout_as_torch"].all():
        raise SystemExit("an output's memory layout differs from torch's")


if __name__ == "__main__":
    main()
