"""Each specialised variant against the general implicit-GEMM kernel and cuDNN, on its own shape class.

Shapes are real layers from shared/reference/shape_suites.md (N=32 by default), bf16, channels_last.
For 1x1 layers the equivalent plain GEMM through `torch.matmul` is timed too; for depthwise layers
both halo modes are. Every provider's result is checked against cuDNN before it is timed.

Usage: python -m tritonconv.bench.variants [--batch N] [--dtype bfloat16] [--out CSV]
"""

from __future__ import annotations

import argparse
import dataclasses

import pandas as pd
import torch
import torch.nn.functional as F

from tritonconv.arithmetic import make_problem
from tritonconv.calls import conv2d_fwd
from tritonconv.config import heuristic_config
from tritonconv.dispatch import Plan, choose_variant
from tritonconv.ops import depthwise

from .timing import channels_last_inputs, median_ms, relative_error, require_gpu, stamp

# (network, layer, c, h, k, r, stride, padding, groups)
LAYERS = [
    ("resnet50", "l1.b1.c1 1x1", 64, 56, 64, 1, 1, 0, 1),
    ("resnet50", "l1.c3 1x1", 64, 56, 256, 1, 1, 0, 1),
    ("resnet50", "l2.b1.ds 1x1 s2", 256, 56, 512, 1, 2, 0, 1),
    ("resnet50", "l3.c3 1x1", 256, 14, 1024, 1, 1, 0, 1),
    ("resnet50", "l4.b2-3.c1 1x1", 2048, 7, 512, 1, 1, 0, 1),
    ("resnext50_32x4d", "l1 grouped 3x3", 128, 56, 128, 3, 1, 1, 32),
    ("resnext50_32x4d", "l2.b1 grouped 3x3 s2", 256, 56, 256, 3, 2, 1, 32),
    ("resnext50_32x4d", "l3 grouped 3x3", 512, 14, 512, 3, 1, 1, 32),
    ("resnext50_32x4d", "l4 grouped 3x3", 1024, 7, 1024, 3, 1, 1, 32),
    ("mobilenetv2", "b1 dw 3x3", 32, 112, 32, 3, 1, 1, 32),
    ("mobilenetv2", "b2 dw 3x3 s2", 96, 112, 96, 3, 2, 1, 96),
    ("mobilenetv2", "dw 3x3 @14 C=384", 384, 14, 384, 3, 1, 1, 384),
    ("convnext_t", "s1 dw 7x7", 96, 56, 96, 7, 1, 3, 96),
    ("convnext_t", "s3 dw 7x7", 384, 14, 384, 7, 1, 3, 384),
    ("replknet31b", "s1 dw 31x31", 128, 56, 128, 31, 1, 15, 128),
]


def bench_layer(layer: tuple, batch: int, dtype: torch.dtype) -> list[dict]:
    network, name, c, h, k, r, stride, padding, groups = layer
    problem = make_problem(
        n=batch, c=c, h=h, w=h, k=k, r=r, s=r, stride=stride, padding=padding, groups=groups, dtype=dtype,
        layout="channels_last",
    )  # fmt: skip
    x, weight = channels_last_inputs(problem)
    kwargs = dict(stride=stride, padding=padding, groups=groups)
    expected = F.conv2d(x, weight, **kwargs)
    variant = choose_variant(problem)
    plans = {variant: Plan(variant, heuristic_config(problem, variant), "heuristic")}
    if variant == "depthwise" and depthwise.HAS_GATHER:
        halo = dataclasses.replace(plans[variant].config, halo_in_registers=True)
        plans["depthwise+halo"] = Plan(variant, halo, "heuristic")
    plans["implicit_gemm"] = Plan("implicit_gemm", heuristic_config(problem, "implicit_gemm"), "heuristic")
    providers = {label: (lambda plan=plan: conv2d_fwd(x, weight, None, problem, plan)) for label, plan in plans.items()}
    providers["cudnn"] = lambda: F.conv2d(x, weight, **kwargs)
    if variant == "conv1x1" and stride == 1:
        x_mat = x.permute(0, 2, 3, 1).reshape(-1, c)
        w_mat = weight[:, :, 0, 0].t()
        providers["torch.matmul"] = lambda: x_mat @ w_mat
    rows = []
    for label, fn in providers.items():
        result = fn()
        if label == "torch.matmul":
            result = result.reshape(batch, h, h, k).permute(0, 3, 1, 2)
        ms = median_ms(fn)
        rows.append(
            {
                "network": network,
                "layer": name,
                "chosen_variant": variant,
                "provider": label,
                "ms": ms,
                "tflops": problem.flops / ms / 1e9,
                "gbps": problem.min_bytes / ms / 1e6,
                "max_rel_err": relative_error(result, expected),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--out", help="also write the long-format table to this CSV file")
    args = parser.parse_args()
    require_gpu("tritonconv.bench.variants")
    dtype = getattr(torch, args.dtype)
    table = pd.DataFrame([row for layer in LAYERS for row in bench_layer(layer, args.batch, dtype)])
    wide = table.pivot_table(index=["network", "layer", "chosen_variant"], columns="provider", values="ms", sort=False)
    print(wide.to_string(float_format=lambda v: f"{v:.4f}"))
    print(f"\nworst max_rel_err against cuDNN: {table['max_rel_err'].max():.2e}")
    table = stamp(table)
    print(f"{table['device'][0]}, torch {torch.__version__}, triton {table['triton_version'][0]}")
    if args.out:
        table.to_csv(args.out, index=False)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
