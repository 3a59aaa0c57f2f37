"""Each specialised variant against the general implicit-GEMM kernel and cuDNN, on its own shape class.

A run of the bench harness (`harness.py`) over the forward layers of the suites (ResNet-50's 1x1,
ResNeXt-50's grouped, MobileNetV2's and ConvNeXt-T's depthwise, RepLKNet's large depthwise) whose
rule picks a specialised variant: providers that variant at its heuristic config, `implicit_gemm`,
cuDNN (`torch`), the plain GEMM (`torch.matmul`) for stride-1 1x1 layers, and the depthwise kernel
with `halo_in_registers` where that exists. Every result is checked against cuDNN before timing.
Usage: python -m tritonconv.tools.bench.variants [--suite ...] [--batch N] [--dtype bfloat16] [--out CSV]
"""

from __future__ import annotations

import pandas as pd

from ...problem.suites import SuiteLayer
from ...routes.registry import Pass, Variant, rule_variant
from . import harness
from .study import main_for

SUITES = "resnet50,resnext50_32x4d,mobilenetv2,convnext_t,replknet31b"


def providers(variant: Variant) -> dict[str, harness.Provider]:
    """The providers that compare `variant` with what it replaces."""
    from ...ops import depthwise

    chosen = {str(variant): harness.variant_provider(variant)}
    if variant == Variant.DEPTHWISE and depthwise.has_gather():
        chosen["depthwise+halo"] = harness.variant_provider(variant, halo_in_registers=True)
    chosen["implicit_gemm"] = harness.variant_provider(Variant.IMPLICIT_GEMM)
    return {**chosen, "cudnn": harness.PROVIDERS["torch"], "torch.matmul": harness.PROVIDERS["torch.matmul"]}


def study(layers: list[SuiteLayer]) -> pd.DataFrame:
    """Long format: one row per specialised layer and provider."""
    rows = []
    for layer in layers:
        problem = layer.problem
        variant = rule_variant(problem, Pass.FWD)
        if variant == Variant.IMPLICIT_GEMM:
            continue
        for row in harness.measure(harness.make_case(layer, Pass.FWD), providers(variant), reference="cudnn"):
            rows.append({
                "network": layer.suite, "layer": layer.name, "chosen_variant": str(variant),
                "provider": row["provider"], "ms": row["ms"], "tflops": problem.flops / row["ms"] / 1e9,
                "gbps": problem.min_bytes / row["ms"] / 1e6, "max_rel_err": row["max_rel_err"],
            })  # fmt: skip
    return pd.DataFrame(rows)


def main() -> None:
    main_for("tritonconv.tools.bench.variants", __doc__, study, default_suites=SUITES)


if __name__ == "__main__":
    main()
