"""The static cost model (issue 26, item 3): its terms behave as the docstring says, and against the
committed H100 sweep it ranks each layer's 48 timed weight-gradient configs with a Spearman
correlation of at least 0.7 and keeps the measured-best config in its top 8 (what the quick GPU run
would time), so a change that makes the model rank worse fails here."""

import dataclasses
from pathlib import Path

import pandas as pd
import pytest
import torch

from tritonconv import make_problem
from tritonconv.problem.config import KernelConfig
from tritonconv.tools.bench import cost_model_check
from tritonconv.tuning.cost_model import H100_SXM, H200, estimate

SWEEP = Path(__file__).parents[1] / "reports" / "h100" / "wgrad_sweep_resnet50_bf16_channels_last.csv"
PROBLEM = make_problem(n=32, c=64, h=56, w=56, k=64, r=3, s=3, padding=1, dtype=torch.bfloat16, layout="channels_last")
CONFIG = KernelConfig(block_m=128, block_n=128, block_k=64, num_warps=8, num_stages=3)


def test_more_programs_than_slots_take_another_wave():
    big = make_problem(n=64, c=64, h=56, w=56, k=64, r=3, s=3, padding=1, dtype=torch.bfloat16)
    small, large = (estimate(p, "fwd", CONFIG) for p in (PROBLEM, big))
    assert large.programs == 2 * small.programs and large.seconds > 1.9 * small.seconds


def test_a_small_tile_cannot_feed_the_tensor_cores():
    """K = 64 output channels: a 128 x 64 tile wastes nothing, and a 16 x 16 one has a quarter of the
    FLOPs per staged byte the SM needs."""
    fitting, tiny = (dataclasses.replace(CONFIG, block_m=m, block_n=n) for m, n in ((128, 64), (16, 16)))
    assert estimate(PROBLEM, "fwd", tiny).compute_seconds > 3 * estimate(PROBLEM, "fwd", fitting).compute_seconds


def test_split_k_partials_cost_memory_and_a_launch():
    one, many = (estimate(PROBLEM, "wgrad", dataclasses.replace(CONFIG, split_k=split)) for split in (1, 64))
    assert many.memory_seconds > one.memory_seconds and many.programs == 64 * one.programs


def test_faster_memory_helps_only_memory_bound_launches():
    depthwise_like = make_problem(n=32, c=256, h=56, w=56, k=256, r=1, s=1, dtype=torch.bfloat16)
    h100, h200 = (estimate(depthwise_like, "fwd", CONFIG, device) for device in (H100_SXM, H200))
    assert h200.memory_seconds < h100.memory_seconds and h200.compute_seconds == h100.compute_seconds


def test_the_model_ranks_the_h100_sweep():
    table = cost_model_check.modelled(pd.read_csv(SWEEP), "resnet50", "wgrad")
    summary = cost_model_check.summary(table)
    assert list(summary["configs"]) == [48, 48]
    for row in summary.to_dict("records"):
        assert row["spearman"] >= 0.7, row
        assert row["best_in_model_top_8"], row


def test_the_check_writes_its_report(tmp_path, capsys):
    out = tmp_path / "validation.md"
    cost_model_check.main([str(SWEEP), "--out", str(out)])
    text = out.read_text()
    assert "| l1.c2 3x3" in text and "| l3.b2-6.c2 3x3" in text and "spearman" in text
    assert f"wrote {out}" in capsys.readouterr().out


def test_an_unknown_pass_is_refused():
    with pytest.raises(ValueError, match="unknown pass"):
        estimate(PROBLEM, "bwd", CONFIG)


def test_a_limited_tuning_run_times_the_heuristic_and_the_models_best():
    from tritonconv.routes.registry import spec
    from tritonconv.tuning import tuner
    from tritonconv.tuning.cost_model import rank
    from tritonconv.tuning.space import candidates

    configs = candidates(PROBLEM, "fwd", "implicit_gemm")
    heuristic = spec("fwd", "implicit_gemm").heuristic(PROBLEM)
    chosen = tuner._sample(configs, 4, PROBLEM, "fwd", "implicit_gemm")
    best = [config for config in rank(PROBLEM, "fwd", configs) if config != heuristic]
    assert len(configs) > 4 and chosen == ([heuristic, *best[:3]] if heuristic in configs else best[:4])
    depthwise = make_problem(n=8, c=32, h=28, w=28, k=32, r=3, s=3, padding=1, groups=32, dtype=torch.bfloat16)
    spread = candidates(depthwise, "fwd", "depthwise")
    assert tuner._sample(spread, 3, depthwise, "fwd", "depthwise") == [
        spread[int(i * len(spread) / 3)] for i in range(3)
    ]
