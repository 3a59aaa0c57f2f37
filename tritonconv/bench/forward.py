"""`make bench`: forward kernel against cuDNN on ResNet-50 shapes, bf16, channels_last, on a GPU.

Both sides get the same inputs in one process; cuDNN runs with `torch.backends.cudnn.benchmark = True`
and each time is the median of `triton.testing.do_bench` after its warm-up (host work included), next
to the median of CUDA-graph replays (GPU time alone). Every result is checked
against cuDNN's before it is timed. Usage: python -m tritonconv.bench.forward [--batch N] [--out CSV]
"""

from __future__ import annotations

import argparse

import pandas as pd
import torch
import torch.nn.functional as F

import tritonconv
from tritonconv.suites import load_suite

from .timing import channels_last_inputs, graph_ms, layer_problem, median_ms, relative_error, require_gpu, stamp

# (layer, c, h, k, r, stride, padding): every unique ResNet-50 v1.5 layer, from the resnet50 suite
# (autotune/resnet50.csv), in the square, one-stride form these kernel studies take.
RESNET50_LAYERS = [
    (layer.name, layer.problem.c, layer.problem.h, layer.problem.k, layer.problem.r, layer.problem.stride[0],
     layer.problem.padding[0])
    for layer in load_suite("resnet50")
]  # fmt: skip


def bench_layer(layer: tuple, batch: int, dtype: torch.dtype) -> dict:
    name, c, h, k, r, stride, padding = layer
    problem = layer_problem(layer, batch, dtype)
    x, weight = channels_last_inputs(problem)
    kwargs = dict(stride=stride, padding=padding)
    rel_err = relative_error(tritonconv.conv2d(x, weight, **kwargs), F.conv2d(x, weight, **kwargs))
    triton_ms = median_ms(lambda: tritonconv.conv2d(x, weight, **kwargs))
    torch_ms = median_ms(lambda: F.conv2d(x, weight, **kwargs))
    triton_graph_ms = graph_ms(lambda: tritonconv.conv2d(x, weight, **kwargs))
    torch_graph_ms = graph_ms(lambda: F.conv2d(x, weight, **kwargs))
    return {
        "layer": name,
        "n": batch,
        "c": c,
        "h": h,
        "k": k,
        "r": r,
        "stride": stride,
        "dtype": str(dtype).removeprefix("torch."),
        "layout": "channels_last",
        "variant": tritonconv.explain(x, weight, **kwargs)["variant"],
        "triton_ms": triton_ms,
        "cudnn_ms": torch_ms,
        "speedup": torch_ms / triton_ms,
        "triton_graph_ms": triton_graph_ms,
        "cudnn_graph_ms": torch_graph_ms,
        "graph_speedup": torch_graph_ms / triton_graph_ms,
        "triton_tflops": problem.flops / triton_ms / 1e9,
        "cudnn_tflops": problem.flops / torch_ms / 1e9,
        "max_rel_err": rel_err,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--out", help="also write the table to this CSV file")
    args = parser.parse_args()
    require_gpu("make bench")
    table = pd.DataFrame([bench_layer(layer, args.batch, getattr(torch, args.dtype)) for layer in RESNET50_LAYERS])
    print(table.to_string(index=False))
    table = stamp(table)
    print(f"\n{table['device'][0]}, torch {torch.__version__}, triton {table['triton_version'][0]}")
    if args.out:
        table.to_csv(args.out, index=False)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
