"""Tuning what a user runs (a model's convolutions) and tuning across ranks (torchrun, merged caches)."""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from conv_reference import needs_runtime_loops
from torch import nn

import tritonconv
from tritonconv.models.tune_model import record_problems
from tritonconv.models.verdict import COLUMNS
from tritonconv.tuning.cache import TuningCache


class MixedModel(nn.Module):
    """Convs reached every way a model reaches them: nn.Conv2d, tritonconv.Conv2d with a padding
    mode, a layer called twice, and a functional call."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.depthwise = tritonconv.Conv2d(8, 8, 3, padding=1, padding_mode="reflect", groups=8, bias=False)
        self.project = nn.Parameter(torch.randn(4, 8, 1, 1))

    def forward(self, x):
        x = self.depthwise(self.depthwise(self.stem(x)))
        return F.conv2d(x, self.project, stride=2)


def test_recording_sees_every_conv_as_tritonconv_would_run_it():
    model = MixedModel()
    problems = record_problems(model, torch.randn(2, 3, 8, 8))
    expected = [
        tritonconv.make_problem(n=2, c=3, h=8, w=8, k=8, r=3, s=3, padding=1, has_bias=True),
        # reflect padding: torch pads the input, then the conv runs unpadded on 10x10
        tritonconv.make_problem(n=2, c=8, h=10, w=10, k=8, r=3, s=3, groups=8),
        tritonconv.make_problem(n=2, c=8, h=10, w=10, k=8, r=3, s=3, groups=8),
        tritonconv.make_problem(n=2, c=8, h=8, w=8, k=4, r=1, s=1, stride=2),
    ]
    assert problems == expected
    channels_last = model.to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 8, 8).to(memory_format=torch.channels_last)
    assert {problem.layout for problem in record_problems(channels_last, x)} == {"channels_last"}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert {problem.dtype for problem in record_problems(model, torch.randn(2, 3, 8, 8))} == {torch.bfloat16}


def test_recording_compiles_no_kernel_and_leaves_the_model_as_it_was(monkeypatch):
    from tritonconv.frontend import functional
    from tritonconv.plan.prepared import PreparedConv

    monkeypatch.setattr(PreparedConv, "forward", lambda *args: pytest.fail("a kernel ran while recording"))
    model = MixedModel().train()
    record_problems(model, torch.randn(1, 3, 8, 8))
    assert model.training and not functional._shapes_only


@needs_runtime_loops
def test_tune_model_tunes_each_distinct_problem_once(tmp_path, monkeypatch):
    monkeypatch.setenv("TRITONCONV_CACHE_DIR", str(tmp_path))
    model, x = MixedModel(), torch.randn(2, 3, 8, 8)
    summary = tritonconv.tune_model(model, x, passes=("fwd", "wgrad"), timer=lambda fn: [1.0], max_candidates=1)
    assert len(summary.problems) == 3
    assert (summary.tuned, summary.cached, summary.failed) == (6, 0, 0)
    again = tritonconv.tune_model(model, x, passes=("fwd", "wgrad"), timer=lambda fn: [1.0], max_candidates=1)
    assert (again.tuned, again.cached) == (0, 6)
    assert tritonconv.explain(x, model.stem.weight, model.stem.bias, padding=1)["config_source"] == "tuned cache"


MODEL_MODULE = """
import torch
from torch import nn


def build():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 1))
"""


def run_tune(cache, *args, cwd=None, launcher=()):
    env = {**os.environ, "TRITONCONV_CACHE_DIR": str(cache), "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [*launcher, "-m", "tritonconv", "tune", "--max-candidates", "1", *args]
    result = subprocess.run(
        command if launcher else [sys.executable, *command], env=env, cwd=cwd, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()


def test_cli_tunes_a_model_from_its_factory(tmp_path):
    (tmp_path / "my_models.py").write_text(MODEL_MODULE)
    args = ["--model", "my_models:build", "--input-shape", "2,3,8,8", "--dtype", "float32", "--layout", "contiguous"]
    first = run_tune(tmp_path / "cache", *args, cwd=tmp_path)
    assert first[-1] == "tuned: 2, from cache: 0, failed: 0"  # the two 1x1 convs are one problem
    assert run_tune(tmp_path / "cache", *args, "--batch", "4", cwd=tmp_path)[-1] == "tuned: 2, from cache: 0, failed: 0"
    again = run_tune(tmp_path / "cache", *args, "--report", str(tmp_path / "verdict.csv"), cwd=tmp_path)
    assert again[-1] == "tuned: 0, from cache: 2, failed: 0"
    # The verdict: a row per (layer, pass) in call order, the model line; the interpreter's torch wins everywhere.
    assert again[0].split() == list(COLUMNS) and again[1].split()[:2] == ["0", "fwd"]
    assert [line.split()[0] for line in again[1:4]] == ["0", "2", "3"]
    assert again[4].startswith("tritonconv serves 0 of 3 layer-passes; convolution time ")
    report = pd.read_csv(tmp_path / "verdict.csv")
    assert list(report.columns) == list(COLUMNS) and list(report["choice"]) == ["torch"] * 3
    assert (report["triton_ms"] > report["torch_ms"]).all() and (report["speedup"] == 1.0).all()
    triton_only = run_tune(tmp_path / "cache", *args, "--routes", "triton", cwd=tmp_path)
    assert triton_only[-1] == "tuned: 0, from cache: 2, failed: 0", "chosen again from the stored times"
    assert triton_only[4].startswith("tritonconv serves 3 of 3 layer-passes")


def test_cli_refuses_a_model_without_an_input_shape(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "tritonconv", "tune", "--model", "my_models:build"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2 and "--input-shape" in result.stderr


def test_torchrun_shards_the_suite_and_every_rank_gets_every_entry(tmp_path):
    """Two ranks (gloo, CPU): each tunes its share, the run reports the whole suite once, and the
    cache holds every entry; a second run finds them all cached."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    lines = run_tune(tmp_path, "--suite", "smoke", launcher=torchrun)
    layers = len(tritonconv.problem.suites.load_suite("smoke"))
    assert lines[-1] == f"tuned: {layers}, from cache: 0, failed: 0" and lines.count(lines[-1]) == 1, lines
    assert "ranks: 2" in lines[0]
    (cache_file,) = tmp_path.glob("*.json")
    assert len(TuningCache(cache_file).entries()) == layers
    again = run_tune(tmp_path, "--suite", "smoke", launcher=torchrun)[-1]
    assert again == f"tuned: 0, from cache: {layers}, failed: 0"


WORLD_SIZE = 2


def _rank_main(rank, init_file, root):
    """One rank with a cache of its own, as on separate nodes."""
    from tritonconv.tuning.distributed import Shard, _all_gather
    from tritonconv.tuning.session import device_cache, tune_problems

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        shard = Shard(rank, WORLD_SIZE, _all_gather)
        cache = device_cache(os.path.join(root, f"node{rank}"))
        tuned_here = []
        summary = tune_problems(
            SHARD_PROBLEMS, ["fwd"], cache=cache, shard=shard, max_candidates=2,
            timer=lambda fn: [1.0], progress=lambda done, total, key: tuned_here.append(key) if done < total else None,
        )  # fmt: skip
        with open(os.path.join(root, f"rank{rank}.json"), "w") as file:
            json.dump({"summary": [summary.tuned, summary.cached, summary.failed], "mine": tuned_here}, file)
    finally:
        dist.destroy_process_group()


SHARD_PROBLEMS = [
    tritonconv.make_problem(n=1, c=4, h=5, w=5, k=8, r=3, s=3, padding=1),
    tritonconv.make_problem(n=1, c=8, h=5, w=5, k=8, r=1, s=1),
    tritonconv.make_problem(n=1, c=8, h=6, w=6, k=8, r=3, s=3, padding=1, groups=8),
]


def test_ranks_with_separate_caches_each_end_with_every_entry(tmp_path):
    mp.spawn(_rank_main, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    reports = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(WORLD_SIZE)]
    assert all(report["summary"] == [3, 0, 0] for report in reports)
    shares = [set(report["mine"]) for report in reports]
    assert not shares[0] & shares[1] and len(shares[0] | shares[1]) == 3, "each problem is tuned by one rank"
    (first,), (second,) = (list((tmp_path / f"node{rank}").glob("*.json")) for rank in range(WORLD_SIZE))
    entries = [TuningCache(path).entries() for path in (first, second)]
    assert len(entries[0]) == 3 and entries[0] == entries[1], "one agreed choice per problem, on every node"


def test_a_conv1d_is_recorded_as_the_2d_problem_that_serves_it():
    model = torch.nn.Conv1d(4, 6, 3, stride=2, padding=1)
    x = torch.randn(2, 9, 4).transpose(1, 2)  # length-major: still a contiguous-output problem
    (problem,) = record_problems(model, x)
    assert problem == tritonconv.make_problem(
        n=2, c=4, h=1, w=9, k=6, r=1, s=3, stride=(1, 2), padding=(0, 1), has_bias=True
    )


class Decoder(nn.Module):
    """Transposed convolutions reached as layers (2-D, 1-D, patched or not) and as a functional call."""

    def __init__(self):
        super().__init__()
        self.up = nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1)
        self.up_patched = tritonconv.ConvTranspose2d(4, 4, 2, stride=2, bias=False)
        self.up_1d = nn.ConvTranspose1d(4, 2, 3, stride=2, padding=1, output_padding=1)

    def forward(self, x):
        y = self.up_patched(self.up(x))
        return self.up_1d(y.flatten(2)), F.conv_transpose2d(y, torch.ones(4, 2, 1, 1))


def test_transposed_convolutions_are_tuned_as_the_passes_that_serve_them(tmp_path, monkeypatch):
    """Recorded as their underlying convolutions (input = the transposed output), whose dgrad is the
    transposed forward: tuning 'fwd' of a decoder tunes those dgrads, and planning then reads them."""
    monkeypatch.setenv("TRITONCONV_CACHE_DIR", str(tmp_path))
    model, x = Decoder(), torch.randn(2, 8, 3, 3)
    expected = [
        tritonconv.make_problem(n=2, c=4, h=6, w=6, k=8, r=4, s=4, stride=2, padding=1),
        tritonconv.make_problem(n=2, c=4, h=12, w=12, k=4, r=2, s=2, stride=2),
        tritonconv.make_problem(n=2, c=2, h=1, w=288, k=4, r=1, s=3, stride=(1, 2), padding=(0, 1)),
        tritonconv.make_problem(n=2, c=2, h=12, w=12, k=4, r=1, s=1),
    ]
    summary = tritonconv.tune_model(model, x, passes=("fwd",), timer=lambda fn: [1.0], max_candidates=1)
    assert summary.problems == expected
    assert (summary.tuned, summary.cached, summary.failed) == (4, 0, 0)
    entries = TuningCache(next(tmp_path.glob("*.json"))).entries()
    assert sorted(key.split(" ")[0] for key in entries) == ["dgrad"] * 4, list(entries)
