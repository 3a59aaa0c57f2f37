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

from .timing import channels_last_inputs, graph_ms, layer_problem, median_ms, relative_error, require_gpu, stamp

# (layer, c, h, k, r, stride, padding): every unique ResNet-50 v1.5 layer, from shared/reference/shape_suites.md.
RESNET50_LAYERS = [
    ("conv1 7x7 s2", 3, 224, 64, 7, 2, 3),
    ("l1.b1.c1 1x1", 64, 56, 64, 1, 1, 0),
    ("l1.c2 3x3", 64, 56, 64, 3, 1, 1),
    ("l1.c3/ds 1x1", 64, 56, 256, 1, 1, 0),
    ("l1.b2-3.c1 1x1", 256, 56, 64, 1, 1, 0),
    ("l2.b1.c1 1x1", 256, 56, 128, 1, 1, 0),
    ("l2.b1.c2 3x3 s2", 128, 56, 128, 3, 2, 1),
    ("l2.b1.ds 1x1 s2", 256, 56, 512, 1, 2, 0),
    ("l2.c3 1x1", 128, 28, 512, 1, 1, 0),
    ("l2.b2-4.c1 1x1", 512, 28, 128, 1, 1, 0),
    ("l2.b2-4.c2 3x3", 128, 28, 128, 3, 1, 1),
    ("l3.b1.c1 1x1", 512, 28, 256, 1, 1, 0),
    ("l3.b1.c2 3x3 s2", 256, 28, 256, 3, 2, 1),
    ("l3.b1.ds 1x1 s2", 512, 28, 1024, 1, 2, 0),
    ("l3.c3 1x1", 256, 14, 1024, 1, 1, 0),
    ("l3.b2-6.c1 1x1", 1024, 14, 256, 1, 1, 0),
    ("l3.b2-6.c2 3x3", 256, 14, 256, 3, 1, 1),
    ("l4.b1.c1 1x1", 1024, 14, 512, 1, 1, 0),
    ("l4.b1.c2 3x3 s2", 512, 14, 512, 3, 2, 1),
    ("l4.b1.ds 1x1 s2", 1024, 14, 2048, 1, 2, 0),
    ("l4.c3 1x1", 512, 7, 2048, 1, 1, 0),
    ("l4.b2-3.c1 1x1", 2048, 7, 512, 1, 1, 0),
    ("l4.b2-3.c2 3x3", 512, 7, 512, 3, 1, 1),
]


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
