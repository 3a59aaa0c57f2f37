"""`make gpu-quick` rehearsed in the interpreter: every stage on the smoke suite with an injected timer,
every file it writes checked, and a run killed between stages (and one out of time inside a stage)
resumed without redoing what was finished."""

import pandas as pd
import pytest
import torch
from torch import nn

from tritonconv.ops import launch_spec
from tritonconv.problem.suites import load_suite
from tritonconv.routes.registry import is_depthwise_1d
from tritonconv.tools.bench import harness
from tritonconv.tools.bench.quick import context, correctness, plan, precompile, summary, tune
from tritonconv.tuning import session
from tritonconv.tuning.prune import HEURISTIC, TMA_HEURISTIC, pruned

TINY_SUITE = """layer,count,n,c,h,w,k,r,s,stride_h,stride_w,pad_h,pad_w,dil_h,dil_w,groups
3x3,2,1,8,5,5,8,3,3,1,1,1,1,1,1,1
1x1 s2,1,1,8,6,6,16,1,1,2,2,0,0,1,1,1
"""
TINY_SERVING = """layer,count,kind,batch,channels,width,tokens
decode b2,1,decode,2,8,4,1
prefill 2,1,prefill,2,8,3,11
"""


def tiny_model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1))


def quick_run(tmp_path, monkeypatch, timers) -> context.QuickRun:
    monkeypatch.setenv("TRITONCONV_CACHE_DIR", str(tmp_path / "tables"))
    (tmp_path / "tiny.csv").write_text(TINY_SUITE)
    (tmp_path / "tiny_serving.csv").write_text(TINY_SERVING)
    reports = tmp_path / "reports"
    reports.mkdir(exist_ok=True)
    return plan.quick_run(
        "interpreter", reports, session.device_cache(tmp_path / "tables").path, timers, 3600, gpu=False,
        main_suite="smoke", more_suites=(str(tmp_path / "tiny.csv"),), top_k=1, correctness_batch=None,
        correctness_suite=str(tmp_path / "tiny.csv"),
        precisions=("fp32 ieee", "bf16"), layouts=("channels_last",), model=tiny_model, model_name="tiny",
        model_input=(3, 6, 6), model_batches=(2,), export=tmp_path / "out",
        serving_suite=str(tmp_path / "tiny_serving.csv"),
    )  # fmt: skip


def counting(monkeypatch, module, name: str) -> list:
    calls = []
    original = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def test_the_quick_run_writes_every_file_and_resumes_where_it_stopped(tmp_path, monkeypatch, capsys):
    timers = context.rehearsal_timers(2.0)
    run = quick_run(tmp_path, monkeypatch, timers)
    stages = plan.stages(run)
    names = [stage.name for stage in stages]
    assert names == ["a correctness", "b tune smoke", "c bench smoke", "c host smoke", "c model",
                     "d serving tiny_serving", "d tune tiny", "d bench tiny"]  # fmt: skip
    # A run killed after stage b: only a and b ran (each stage's state is written as it ends).
    assert plan.execute(run, stages[:2], capability=None) == 0
    first = capsys.readouterr().out
    assert first.splitlines()[1].startswith("compile ahead (stages a-c):"), "the compile count comes first"
    checks = pd.read_csv(run.reports / "quick_correctness.csv")
    expected = correctness.checks(run.correctness_suite, None, run.precisions, run.layouts)
    assert list(checks.columns) == [*correctness.COLUMNS, "device"] and len(checks) == len(expected)
    assert (checks["verdict"] == "ok").all(), checks[checks["verdict"] != "ok"]
    assert set(checks["precision"]) == {"fp32 ieee", "bf16"} and (checks["error_over_bound"] <= 1).all()

    candidates = pd.read_csv(run.reports / "quick_candidates_smoke.csv")
    work = tune.work(run, "smoke")
    assert set(candidates["key"]) == {key for key, *_ in work}
    for key, problem, pass_name, _ in work:
        mine = candidates[candidates["key"] == key]
        kernels, torchs = mine[mine["variant"] != "torch"], mine[mine["variant"] == "torch"]
        assert len(kernels) == len(pruned(problem, pass_name, run.top_k)) <= run.top_k + 2 + 2  # + spread routes
        assert len(torchs) == 1 and set(torchs["why"]) == {"torch"}, "torch's own kernel is timed beside them"
        assert HEURISTIC in set(mine["why"]) and mine["chosen"].sum() == 1, mine
        assert not torchs["chosen"].any(), "a tie (every time 2.0) keeps the Triton kernel"
        assert (mine["status"] == "timed").all() and (mine["median_ms"] == 2.0).all()
        assert kernels["programs"].notna().all() and kernels["kernels"].notna().all()
    assert {"model_rank", "model_us", "registers", "spill_bytes", "shared_bytes", "waves", "sms"} <= set(candidates)
    assert TMA_HEURISTIC in set(candidates["why"])
    table = session.cache_at(run.table).entries()
    assert len(table) == len(work) and all(entry["config"] for entry in table.values())
    assert all(entry["torch_ms"] == 2.0 and entry["triton"]["median_ms"] == 2.0 for entry in table.values())
    assert all(entry["pruned_to"].endswith("top 1") for entry in table.values())

    # The next run resumes: a and b are not redone; c runs out of time after a few benchmarks.
    checked, tuned = counting(monkeypatch, correctness, "run_check"), counting(monkeypatch, tune, "tune_problems")
    measured = counting(monkeypatch, harness, "measure")
    eager = timers.eager

    def running_out(fn):
        if len(measured) == 3:
            run.deadline = 0.0
        return eager(fn)

    run.timers = context.Timers(timers.samples, running_out, timers.graph, timers.host)
    assert plan.execute(run, stages, capability=None) == 0
    assert not checked and not tuned
    assert "6 stages left" in capsys.readouterr().out
    state = plan.read_state(run.reports / plan.STATE_FILE)
    assert state["c bench smoke"]["status"].startswith("out of time") and len(measured) == 3
    assert not (run.reports / "quick_smoke.csv").exists(), "a stage's files appear only when it is done"

    run.timers, run.deadline = timers, float("inf")
    assert plan.execute(run, stages, capability=None) == 0
    out = capsys.readouterr().out
    smoke_problems = {problem for _, problem, _, _ in work}
    retuned = [problem for arguments in tuned for problem in arguments[0] if problem in smoke_problems]
    assert not checked and not retuned and "0 stages left" in out
    bench = pd.read_csv(run.reports / "quick_smoke.csv")
    layer_passes = bench["key"].nunique()
    tiny_passes = 2 * 3
    layers = len(load_suite("smoke"))
    assert layer_passes == 3 * layers and len(measured) == 3 + (layer_passes - 3) + tiny_passes, "no benchmark twice"
    assert set(bench["provider"]) == {"tuned", "triton", "heuristic", "tma", "torch"} and bench["correct"].all()
    always = {"tuned", "triton", "heuristic", "torch"}
    assert (bench.groupby("key")["provider"].apply(set).map(lambda p: always <= p)).all()
    triton_rows = bench[bench["provider"] == "triton"]
    assert (triton_rows["config_source"] == "tuned, Triton alone").all()
    assert {"ms", "graph_ms", "max_rel_err", "variant", "config", "config_source"} <= set(bench)
    tuned_rows = bench[bench["provider"] == "tuned"]
    assert (tuned_rows["config_source"] == "tuned cache").all(), "the benchmark plans from the table stage b filled"

    host = pd.read_csv(run.reports / "quick_host_smoke.csv")
    planar = sum(1 for layer in load_suite("smoke") if not layer.problem.is_3d)
    sequences = sum(1 for layer in load_suite("smoke") if is_depthwise_1d(layer.problem))
    assert host["layer"].nunique() == planar and len(host) == planar * 13 + sequences  # 13 calls, + a decode step
    assert (host["pass"] == "decode step").sum() == sequences
    assert {"torch route fwd", "torch fwd (same tensors)"} <= set(host["pass"])
    model = pd.read_csv(run.reports / "quick_model.csv")
    calls = ["train step unpatched", "train step patched", "inference unpatched", "inference patched fuse=True"]
    assert list(model["call"]) == calls and (model["inference_rel_err"] < 0.05).all()
    assert (run.reports / "quick_candidates_tiny.csv").exists() and (run.reports / "quick_tiny.csv").exists()
    served = pd.read_csv(run.reports / "serving_tiny_serving.csv")
    assert set(served["provider"]) == {"tritonconv", "torch"} and served["correct"].all() and len(served) == 4
    text = (run.reports / plan.SUMMARY_FILE).read_text()
    rows = [line for line in text.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in rows[0].split("|")[1:-1]]
    assert header[0] == "suite" and "tma graph" in header and "triton wins" in header
    assert {"tuned (torch where faster) eager", "Triton alone eager", "Triton alone graph"} <= set(header)
    wins = header.index("triton wins")
    assert all(line.split("|")[1:-1][wins].strip().split(" of ")[0] == line.split("|")[1:-1][wins].strip().split(
        " of ")[1] for line in rows[2:]), "every time ties: the Triton kernel serves every layer-pass"  # fmt: skip
    assert len(rows) == 2 + 2 * 4  # header, rule, (fwd, dgrad, wgrad, all) per suite
    assert any(line.startswith("| smoke") and "| all" in line for line in rows) and "1.00x" in text
    assert rows[0] in out, "the run prints the summary table at its end"
    assert not list((run.reports / ".gpu-quick").glob("*.jsonl")), "finished stages leave no journal"
    exported = {path.name for path in (tmp_path / "out" / "reports" / "interpreter").iterdir()}
    assert {path.name for path in run.reports.iterdir() if path.is_file()} == exported
    assert (tmp_path / "out" / "autotune" / run.table.name).read_text() == run.table.read_text()


def test_the_summary_is_the_geomean_of_cudnns_time_over_ours_per_pass():
    rows = []
    for key, pass_name, tuned_ms, torch_ms in (("a", "fwd", 1.0, 2.0), ("b", "fwd", 4.0, 2.0), ("c", "wgrad", 1, 3)):
        for provider, ms in (("tuned", tuned_ms), ("heuristic", 2 * tuned_ms), ("torch", torch_ms)):
            rows.append({"suite": "s", "key": key, "pass": pass_name, "provider": provider, "ms": ms,
                         "graph_ms": ms / 2, "correct": True})  # fmt: skip
    table = summary.speedups(pd.DataFrame(rows)).set_index("pass")
    assert table.loc["fwd", "tuned eager"] == pytest.approx(1.0)  # sqrt(2 * 0.5)
    assert table.loc["wgrad", "tuned graph"] == pytest.approx(3.0)
    assert table.loc["all", "heuristic eager"] == pytest.approx((1.0 * 0.25 * 1.5) ** (1 / 3))
    assert pd.isna(table.loc["all", "tma eager"]) and "n/a" in summary.markdown(table.reset_index())


def test_captured_launches_that_differ_only_in_grid_or_size_class_compile_once():
    base = ("m", "k", (1, 1, 1), (("tensor", "torch.bfloat16", 0),), (64, 7, 1), (("BLOCK", 64),))
    other_grid = ("m", "k", (9, 1, 1), *base[3:])
    other_size = (*base[:4], (128, 9, 1), base[5])
    divisible_by_16 = (*base[:4], (64, 16, 1), base[5])
    assert launch_spec.compile_key(base) == launch_spec.compile_key(other_grid) == launch_spec.compile_key(other_size)
    assert launch_spec.compile_key(base) != launch_spec.compile_key(divisible_by_16)
    assert launch_spec.compile_key(base) != launch_spec.compile_key((*base[:4], (64, 7, 2**31), base[5]))


def test_the_dry_run_counts_stages_candidates_and_kernels(tmp_path, monkeypatch, capsys):
    run = quick_run(tmp_path, monkeypatch, context.rehearsal_timers())
    run.more_suites = ()
    assert plan.dry_run(run, plan.stages(run)[:2]) == 0
    out = capsys.readouterr().out
    assert "| a correctness" in out and "| b tune smoke" in out and "candidates" in out
    assert "kernels to compile ahead for a-c:" in out and "assumptions:" in out
    seconds = float(out.strip().splitlines()[-1].removeprefix("estimated device time: ").removesuffix(" s"))
    assert plan.START_S < seconds < 600
    assert torch.backends.cudnn.allow_tf32  # the correctness stage put torch's switch back


COMPILE_AHEAD = """
import json, torch
from tritonconv.ops import static_compile
from tritonconv.ops import launch_spec
from tritonconv.tools.bench.quick import precompile
from tritonconv.tools.bench.quick.correctness import Check, launcher
from tritonconv.problem.suites import load_suite
from tritonconv.routes.registry import is_depthwise_1d

if __name__ == "__main__":
    layer = load_suite("smoke", dtype=torch.bfloat16)[0]  # 3x3 pad 1: the TMA route applies
    with static_compile.compiling_for("sm90"):
        work = [launcher(Check(layer.name, layer.problem, "fwd", variant, "bf16"), torch.device("cpu"))
                for variant in ("implicit_gemm", "tma")]
        specs = precompile.capture(work)
    first = precompile.compile_all(specs, (9, 0), jobs=2)
    again = precompile.compile_all(specs, (9, 0), jobs=1)
    with static_compile.compiling_for("sm90"), precompile.launch.captured() as launches:
        work[1]()
    found, warps = launch_spec.captured_usage(*launches[0])  # known from the workers: nothing compiles
    kinds = sorted({pointer[0] for spec in specs for pointer in spec[3]})
    print(json.dumps({"first": first, "again": again, "kinds": kinds, "tma": found.tma,
                      "known": len(launch_spec.KNOWN_USAGE), "entries": precompile.triton_cache_entries()}))
"""


def test_kernels_compiled_ahead_by_workers_are_the_ones_the_run_finds(tmp_path):
    """Two routes' launches (one fed by TMA descriptors) compiled by two worker processes land in
    Triton's cache under the keys the run itself computes: a second compile finds them all."""
    import json
    import os
    import subprocess
    import sys

    env = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "triton")
    done = subprocess.run([sys.executable, "-c", COMPILE_AHEAD], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    first, again = found["first"], found["again"]
    assert first["launches"] == 2 and first["compiled"] == 2 and not first["errors"], first
    assert again["compiled"] == 0 and again["found_compiled"] == 2 and found["entries"] == 2, again
    assert "descriptor" in found["kinds"] and found["tma"] and found["known"] == 2


def test_a_failing_compile_ahead_costs_compile_time_not_the_run(tmp_path, monkeypatch, capsys):
    run = quick_run(tmp_path, monkeypatch, context.rehearsal_timers())

    def broken(work):
        raise RuntimeError("planted")

    monkeypatch.setattr(precompile, "capture", broken)
    assert plan.execute(run, plan.stages(run)[:1], capability=(9, 0)) == 0
    assert "compile ahead (stages a-c) failed" in capsys.readouterr().out
    assert (run.reports / "quick_correctness.csv").exists()
