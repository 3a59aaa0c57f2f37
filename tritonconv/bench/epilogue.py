"""Fused epilogue against cuDNN plus torch's separate ops, on a suite's layers (GPU).

For each layer: tritonconv's conv + bias + relu (+ residual) in one kernel against `F.conv2d` with
bias followed by torch's add and relu, same tensors (bf16 channels_last by default), one process,
`torch.backends.cudnn.benchmark = True`. Both results are compared before timing. Times are
`triton.testing.do_bench` medians and CUDA-graph replay medians.

Usage: python -m tritonconv.bench.epilogue [--suite resnet50,mobilenetv2] [--batch N] [--out FILE.csv]
"""

from __future__ import annotations

import argparse

import pandas as pd
import torch
import torch.nn.functional as F

import tritonconv
from tritonconv.suites import SuiteLayer, load_suite

from .timing import graph_ms, median_ms, relative_error, require_gpu, stamp


def bench_layer(suite: str, layer: SuiteLayer, with_residual: bool, device: str = "cuda") -> dict:
    problem = layer.problem
    generator = torch.Generator().manual_seed(0)

    def tensor(shape):
        return torch.randn(shape, generator=generator).to(device, problem.dtype).to(memory_format=problem.memory_format)

    x, weight, residual = tensor(problem.input_shape), tensor(problem.weight_shape), tensor(problem.output_shape)
    bias = torch.randn(problem.k, generator=generator).to(device, problem.dtype)
    residual = residual if with_residual else None
    geometry = dict(stride=problem.stride, padding=problem.padding, dilation=problem.dilation, groups=problem.groups)

    def fused():
        return tritonconv.conv2d(x, weight, bias, **geometry, activation="relu", residual=residual)

    def separate():
        out = F.conv2d(x, weight, bias, **geometry)
        return F.relu(out if residual is None else out + residual)

    error = relative_error(fused(), separate())
    fused_ms, separate_ms = median_ms(fused), median_ms(separate)
    fused_graph_ms, separate_graph_ms = graph_ms(fused), graph_ms(separate)
    return {
        "suite": suite,
        "layer": layer.name,
        "count": layer.count,
        "epilogue": "bias+relu+residual" if with_residual else "bias+relu",
        "fused_ms": fused_ms,
        "torch_ms": separate_ms,
        "speedup": separate_ms / fused_ms,
        "fused_graph_ms": fused_graph_ms,
        "torch_graph_ms": separate_graph_ms,
        "graph_speedup": separate_graph_ms / fused_graph_ms,
        "max_rel_err": error,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="resnet50,mobilenetv2")
    parser.add_argument("--batch", type=int)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--out", default="epilogue.csv")
    args = parser.parse_args()
    require_gpu("tritonconv.bench.epilogue")
    dtype = getattr(torch, args.dtype)
    rows = [
        bench_layer(suite, layer, with_residual)
        for suite in args.suite.split(",")
        for layer in load_suite(suite, batch=args.batch, dtype=dtype)
        for with_residual in (False, True)
    ]
    table = stamp(pd.DataFrame(rows))
    table.to_csv(args.out, index=False)
    print(table.to_string(index=False))
    for (suite, epilogue), group in table.groupby(["suite", "epilogue"]):
        print(f"{suite} {epilogue}: summed graph ms fused {group['fused_graph_ms'].sum():.3f}, "
              f"torch {group['torch_graph_ms'].sum():.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
