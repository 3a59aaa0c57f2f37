"""Backward passes against cuDNN's on ResNet-50 layers (bf16, channels_last, GPU), and reproducibility.

dgrad and wgrad each time tritonconv's Triton kernel against the cuDNN backward torch's autograd runs
(`aten::convolution_backward` on the real input, weight and grad_output, all channels_last, asking
for one gradient), on the same tensors. Each is timed twice: the do_bench median (host work
included, what a Python caller sees) and the median of CUDA-graph replays (the GPU's time alone).
`torch.nn.grad.conv2d_input` and `conv2d_weight` are not the baseline: they pass an expanded
stand-in for the missing tensor, whose layout can send cuDNN down a slower path than autograd takes.
Each result is checked against cuDNN's, and each pass is run twice to show the runs are bitwise equal.

Usage: python -m tritonconv.bench.backward [--batch N] [--out CSV]
"""

from __future__ import annotations

import argparse

import pandas as pd
import torch

from tritonconv.ops.epilogue import NO_EPILOGUE
from tritonconv.prepared import PreparedConv

from .forward import RESNET50_LAYERS
from .timing import graph_ms, layer_tensors, median_ms, relative_error, require_gpu, stamp


def bench_layer(layer: tuple, batch: int, dtype: torch.dtype) -> list[dict]:
    tensors = layer_tensors(layer, batch, dtype)
    problem, x, weight, grad_output = tensors.problem, tensors.x, tensors.weight, tensors.grad_output
    prepared = PreparedConv(problem, x, weight, NO_EPILOGUE)
    passes = {
        "dgrad": (lambda: prepared.input_grad(grad_output, weight), tensors.cudnn_backward(0)),
        "wgrad": (lambda: prepared.weight_grad(x, grad_output), tensors.cudnn_backward(1)),
    }
    rows = []
    for pass_name, (ours, cudnn) in passes.items():
        got = ours()
        reproducible = torch.equal(got, ours())
        triton_ms, cudnn_ms = median_ms(ours), median_ms(cudnn)
        triton_graph_ms, cudnn_graph_ms = graph_ms(ours), graph_ms(cudnn)
        rows.append(
            {
                "layer": layer[0],
                "pass": pass_name,
                "triton_ms": triton_ms,
                "cudnn_ms": cudnn_ms,
                "speedup": cudnn_ms / triton_ms,
                "triton_graph_ms": triton_graph_ms,
                "cudnn_graph_ms": cudnn_graph_ms,
                "graph_speedup": cudnn_graph_ms / triton_graph_ms,
                "triton_tflops": problem.flops / triton_ms / 1e9,
                "max_rel_err": relative_error(got, cudnn()),
                "bitwise_reproducible": reproducible,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--out", help="also write the table to this CSV file")
    args = parser.parse_args()
    require_gpu("tritonconv.bench.backward")
    dtype = getattr(torch, args.dtype)
    table = pd.DataFrame([row for layer in RESNET50_LAYERS for row in bench_layer(layer, args.batch, dtype)])
    print(table.to_string(index=False))
    table = stamp(table)
    print(f"\n{table['device'][0]}, torch {torch.__version__}, triton {table['triton_version'][0]}")
    if args.out:
        table.to_csv(args.out, index=False)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
