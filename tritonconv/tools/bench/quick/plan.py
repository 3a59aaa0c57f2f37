"""The quick run's stages, most wanted first, and the loop that runs, resumes and estimates them.

Stages (each writes its files completely before the next begins; `reports/<device>/`):
  a  correctness: every route and pass, bf16, fp16, TF32, fp32 IEEE      quick_correctness.csv
  b  tune ResNet-50 (N=32, bf16, channels_last) over the pruned space   autotune/<device>.json,
                                                                         quick_candidates_resnet50.csv
  c  bench ResNet-50: tuned, heuristic, TMA, cuDNN; eager and graph      quick_resnet50.csv
     host µs per call on the same layers                                 quick_host_resnet50.csv
     a patched model: training step, inference with fuse=True            quick_model.csv
  d  while time is left: the SSM serving cases (decode steps, packed prefills: tritonconv, torch and the
     causal-conv1d package where installed; `bench/serving.py`)                     serving_ssm.csv
     then the SSM suite, ResNeXt-50, MobileNetV2, ConvNeXt-T, RepLKNet, tuned then benched
  e  `make gpu-report` only (`report.py`): GPU tests, profile, registers, Inductor, fp16, as commands
and after each bench stage the verdict, `quick_summary.md` (`summary.speedups`): cuDNN's time over the
tuned choice's (torch's own kernel where tuning found it faster) and over Triton's alone.

Before the clock runs for a-c, every kernel they launch is compiled over all cores (`precompile`);
a d stage compiles its own kernels as it starts. A stage is done for a code version (a digest of
the package and its suites: `context.code_version`); a run skips done stages, so a second run
resumes where the first stopped, and a stage that ran out of time resumes from its journal.
`dry_run` prints the stages, their candidates and kernels, and the device time they should take.
"""

from __future__ import annotations

import dataclasses
import math
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch

from ....ops import launch_spec
from ....problem.runtime import is_interpreted
from .. import serving
from . import context, correctness, precompile, report, suite, summary, tune
from .context import OutOfTime, QuickRun, code_version, read_state, write_state

STATE_FILE = ".gpu-quick.json"
SERVING_PROVIDERS = ("tritonconv", "torch", "causal-conv1d")
SUMMARY_FILE = "quick_summary.md"

# The dry run's per-item device seconds: assumptions, stated with the estimate, not measurements.
START_S = 30.0  # Python, torch and CUDA start, cuDNN handles
COMPILE_CORE_S = 0.6  # one kernel's compile on one core (the kernel gate: 572 launches, 88 s on 2 cores)
GPU_CORES, POOL_START_S = 16, 10.0
CHECK_S = 0.05  # one correctness check: launch, float64 reference and bound
L2_CLEAR_FACTOR = 1.6  # do_bench clears L2 (256 MB) between runs: ~55 µs each on HBM3e
CANDIDATE_S = (context.TUNE_WARMUP_MS + context.TUNE_REP_MS) * L2_CLEAR_FACTOR / 1e3 + CHECK_S
PROVIDER_S = ((context.BENCH_WARMUP_MS + context.BENCH_REP_MS) * L2_CLEAR_FACTOR + context.BENCH_REP_MS) / 1e3 + 0.05
CUDNN_SEARCH_S = 0.3  # cudnn.benchmark's algorithm search, once per (layer, pass)
HOST_CALL_S = (20 + context.HOST_CALLS * context.HOST_REPEATS) * 40e-6  # ~40 µs per call with launches
HOST_CALLS_PER_LAYER = 11
MODEL_SETUP_S, MODEL_CALL_S = 10.0, 1.5  # per batch size: copies, patching, first runs; per timed call


@dataclasses.dataclass(frozen=True)
class Stage:
    """One resumable part of the run: what it runs, which kernels it launches, what it counts."""

    name: str
    files: tuple[str, ...]
    run: Callable[[QuickRun], object]
    launchers: Callable[[QuickRun], list[Callable[[], object]]]
    counts: Callable[[QuickRun], dict[str, int]]
    seconds: Callable[[dict[str, int]], float]  # estimated device seconds from `counts`
    up_front: bool = True  # compiled before the clock runs
    optional: bool = False  # stage d: started only while its estimate fits in the time left


def stages(run: QuickRun) -> list[Stage]:
    """a, b, c for the main suite, then d for each further suite."""
    main = run.main_suite

    def correctness_checks(r: QuickRun) -> list:
        return correctness.checks(r.correctness_suite, r.correctness_batch, r.precisions, r.layouts)

    def run_correctness(r: QuickRun) -> pd.DataFrame:
        rows = [correctness.run_check(check, r.torch_device) for check in correctness_checks(r)]
        table = pd.DataFrame(rows, columns=correctness.COLUMNS).assign(device=r.device)
        table.to_csv(r.reports / "quick_correctness.csv", index=False)
        return table

    def tune_stage(name: str, of: str, optional: bool) -> Stage:
        return Stage(name, (f"quick_candidates_{Path(of).stem}.csv", "the shipped table"),
                     lambda r: tune.tune_suite(r, of, name), lambda r: tune.launchers(r, of),
                     lambda r: _tune_counts(r, of), lambda c: c["candidates"] * CANDIDATE_S,
                     up_front=not optional, optional=optional)  # fmt: skip

    def bench_stage(name: str, of: str, optional: bool) -> Stage:
        return Stage(name, (f"quick_{Path(of).stem}.csv", SUMMARY_FILE), lambda r: _bench_and_summarise(r, of, name),
                     lambda r: suite.launchers(r, of), lambda r: _bench_counts(r, of),
                     lambda c: c["layer-passes"] * CUDNN_SEARCH_S + c["timed calls"] * PROVIDER_S,
                     up_front=not optional, optional=optional)  # fmt: skip

    plan = [
        Stage("a correctness", ("quick_correctness.csv",), run_correctness,
              lambda r: [correctness.launcher(check, r.torch_device) for check in correctness_checks(r)],
              lambda r: {"checks": len(correctness_checks(r))}, lambda c: c["checks"] * CHECK_S),
        tune_stage(f"b tune {Path(main).stem}", main, False),
        bench_stage(f"c bench {Path(main).stem}", main, False),
        Stage(f"c host {Path(main).stem}", (f"quick_host_{Path(main).stem}.csv",),
              lambda r: suite.host_suite(r, main), lambda r: [], lambda r: {"layers": _planar_layers(r, main)},
              lambda c: c["layers"] * HOST_CALLS_PER_LAYER * HOST_CALL_S),
        Stage("c model", ("quick_model.csv",), suite.model_steps, suite.model_launchers,
              lambda r: {"batch sizes": len(r.model_batches)},
              lambda c: c["batch sizes"] * (MODEL_SETUP_S + 4 * MODEL_CALL_S + 2 * MODEL_CALL_S), up_front=False),
    ]  # fmt: skip
    if run.serving_suite:
        name = Path(run.serving_suite).stem
        plan.append(
            Stage(f"d serving {name}", (f"serving_{name}.csv",), _bench_serving,
                  lambda r: serving.launchers(_serving_cases(r), str(r.torch_device), r.dtype),
                  lambda r: {"cases": len(_serving_cases(r))},
                  lambda c: c["cases"] * len(SERVING_PROVIDERS) * PROVIDER_S, up_front=False, optional=True)
        )  # fmt: skip
    for other in run.more_suites:
        name = Path(other).stem
        plan += [tune_stage(f"d tune {name}", other, True), bench_stage(f"d bench {name}", other, True)]
    if run.report:
        plan += report.command_stages(run, Stage)
    return plan


def _serving_cases(run: QuickRun) -> list:
    from ....problem.serving import load_serving_suite

    return load_serving_suite(run.serving_suite)


def _bench_serving(run: QuickRun) -> pd.DataFrame:
    table = serving.bench_serving(_serving_cases(run), str(run.torch_device), run.dtype, run.timers.eager,
                                  run.timers.graph, run.device)  # fmt: skip
    table.to_csv(run.reports / f"serving_{Path(run.serving_suite).stem}.csv", index=False)
    return table


def _tune_counts(run: QuickRun, of: str) -> dict[str, int]:
    counts = tune.candidate_count(run, of)
    return {"layer-passes": len(counts), "candidates": sum(counts), "most per layer-pass": max(counts, default=0)}


def _bench_counts(run: QuickRun, of: str) -> dict[str, int]:
    passes, calls = suite.timed_calls(run, of)
    return {"layer-passes": passes, "timed calls": calls}


def _planar_layers(run: QuickRun, of: str) -> int:
    from ....problem.suites import load_suite

    return sum(1 for layer in load_suite(of, batch=run.batch) if not layer.problem.is_3d)


def _bench_and_summarise(run: QuickRun, of: str, name: str) -> None:
    suite.bench_suite(run, of, name)
    write_summary(run)


def write_summary(run: QuickRun) -> pd.DataFrame | None:
    """`quick_summary.md` from every suite's bench CSV in the reports folder; the table, or None."""
    frames = [pd.read_csv(path) for path in sorted(run.reports.glob("quick_*.csv")) if _is_bench(path.name)]
    if not frames:
        return None
    table = summary.speedups(pd.concat(frames, ignore_index=True))
    text = (f"# Quick run on {run.device}: cuDNN's time over tritonconv's (geomean over layers; > 1 is faster)\n\n"
            f"{summary.markdown(table)}\n")  # fmt: skip
    (run.reports / SUMMARY_FILE).write_text(text)
    return table


def _is_bench(name: str) -> bool:
    return not name.startswith(("quick_candidates_", "quick_host_", "quick_model", "quick_correctness"))


def execute(run: QuickRun, plan: list[Stage], capability: tuple[int, int] | None) -> int:
    """Run the pending stages while the budget lasts; print the summary; 0 unless a stage failed
    or a result was wrong. `capability` is the GPU's, for the compile ahead (None: interpreter)."""
    version, state_path = code_version(), run.reports / STATE_FILE
    state = read_state(state_path)
    pending = [stage for stage in plan if not _done(state.get(stage.name), version)]
    print(f"quick run on {run.device}, code version {version}: {len(pending)} of {len(plan)} stages pending",
          flush=True)  # fmt: skip
    _compile(run, [stage for stage in pending if stage.up_front], capability, "stages a-c")
    failed = 0
    for stage in pending:
        if stage.optional and run.time_left() < _estimate(stage, run):
            print(f"== {stage.name}: not started, its estimate exceeds the {run.time_left():.0f} s left", flush=True)
            break
        if not stage.up_front:
            _compile(run, [stage], capability, stage.name)
        print(f"== {stage.name}", flush=True)
        began = time.monotonic()
        try:
            result = stage.run(run)
            status = "done"
            if isinstance(result, pd.DataFrame) and "verdict" in result and (result["verdict"] != "ok").any():
                status, failed = "done (wrong results)", failed + 1
        except OutOfTime as stop:
            status = f"out of time: {stop}"
        except Exception as error:  # a bug in a stage: recorded, and the next stage still runs
            traceback.print_exc()
            status, failed = f"failed: {type(error).__name__}: {error}"[:300], failed + 1
        state[stage.name] = {"version": version, "status": "done" if status.startswith("done") else status,
                             "result": status, "seconds": round(time.monotonic() - began, 1)}  # fmt: skip
        write_state(state_path, state)
        run.export_files()
        print(f"   {status} in {state[stage.name]['seconds']} s", flush=True)
        if status.startswith("out of time"):
            break
    table = write_summary(run)
    run.export_files()
    checks = run.reports / "quick_correctness.csv"
    if checks.exists():
        verdicts = pd.read_csv(checks)["verdict"]
        print(f"correctness: {len(verdicts)} checks, {int((verdicts != 'ok').sum())} not ok ({checks.name})")
    print(summary.markdown(table) if table is not None else "no benchmark finished: no summary")
    left = [stage.name for stage in plan if not _done(state.get(stage.name), version)]
    print(f"{len(left)} stages left" + (f" ({', '.join(left)}): run it again" if left else ""))
    return 1 if failed else 0


def _estimate(stage: Stage, run: QuickRun) -> float:
    try:
        return stage.seconds(stage.counts(run))
    except Exception:  # a stage that cannot be counted is not started while time is short
        traceback.print_exc()
        return math.inf


def _done(record: dict | None, version: str) -> bool:
    return bool(record) and record.get("version") == version and record.get("status") == "done"


def _compile(run: QuickRun, plan: list[Stage], capability: tuple[int, int] | None, what: str) -> None:
    """Compile the stages' kernels ahead; a failure here costs compile time in the stages, not the run."""
    try:
        _compile_ahead(run, plan, capability, what)
    except Exception:  # the stages still run: each kernel then compiles as it is first launched
        traceback.print_exc()
        print(f"compile ahead ({what}) failed: the kernels compile as the stages launch them", flush=True)


def _compile_ahead(run: QuickRun, plan: list[Stage], capability: tuple[int, int] | None, what: str) -> None:
    began = time.monotonic()
    specs = precompile.capture(call for stage in plan for call in stage.launchers(run))
    captured_s = time.monotonic() - began
    if capability is None or _interpreted():
        print(f"compile ahead ({what}): {len(specs)} distinct kernels captured in {captured_s:.1f} s; the "
              "interpreter compiles nothing", flush=True)  # fmt: skip
        return
    done = precompile.compile_all(specs, capability)
    print(f"compile ahead ({what}): {done['compiled']} kernels compiled here, {done['found_compiled']} found "
          f"compiled, {len(done['errors'])} failed, of {done['launches']} captured in {captured_s:.1f} s; "
          f"{done['seconds']} s on {done['jobs']} processes", flush=True)  # fmt: skip
    for error in done["errors"][:5]:
        print(f"  compile error: {error}", flush=True)


def _interpreted() -> bool:
    from .... import kernels

    return is_interpreted(kernels._conv2d_fwd_implicit_gemm_kernel)


def dry_run(run: QuickRun, plan: list[Stage]) -> int:
    """Print each stage's counts, kernels and estimate, and `estimated device time: N s` for a-c."""
    version = code_version()
    state = read_state(run.reports / STATE_FILE)
    print(f"quick run plan for {run.device} (code version {version}); each stage's files complete before the next")
    rows, seen, total, optional, capture_s = [], set(), START_S, 0.0, 0.0
    for stage in plan:
        began = time.monotonic()
        counts = stage.counts(run)
        specs = precompile.capture(stage.launchers(run))
        if stage.up_front:
            capture_s += time.monotonic() - began
        keys = {launch_spec.compile_key(spec) for spec in specs}
        new = len(keys - seen)
        seen |= keys
        seconds = stage.seconds(counts)
        done = _done(state.get(stage.name), version)
        if not done:
            total, optional = (total, optional + seconds) if stage.optional else (total + seconds, optional)
        rows.append({"stage": stage.name, "status": "done" if done else "pending",
                     "what": ", ".join(f"{k} {v}" for k, v in counts.items()), "new kernels": new,
                     "estimate_s": round(seconds, 1), "writes": ", ".join(stage.files)})  # fmt: skip
    up_front = sum(row["new kernels"] for row, stage in zip(rows, plan, strict=True) if stage.up_front)
    compile_s = POOL_START_S + up_front * COMPILE_CORE_S / GPU_CORES + capture_s
    print(pd.DataFrame(rows).to_markdown(index=False))
    print(
        f"kernels to compile ahead for a-c: {up_front} (the GPU machine starts with an empty Triton cache), "
        f"{sum(row['new kernels'] for row in rows) - up_front} more for the model and d stages as they start"
        + ("" if run.model else f" (the model's not counted: no {run.model_name} here)")
    )
    print(f"assumptions: start {START_S:.0f} s; capturing a-c's launches {capture_s:.0f} s (as long as it took "
          f"here); compile {COMPILE_CORE_S} s per kernel per core on {GPU_CORES} cores + {POOL_START_S:.0f} s; "
          f"a check {CHECK_S} s; a tuning candidate {CANDIDATE_S:.3f} s (do_bench "
          f"{context.TUNE_WARMUP_MS}+{context.TUNE_REP_MS} ms, L2 clears x{L2_CLEAR_FACTOR}, its check); a benchmark "
          f"call {PROVIDER_S:.3f} s (eager {context.BENCH_WARMUP_MS}+{context.BENCH_REP_MS} ms, graph "
          f"{context.BENCH_REP_MS} ms); cuDNN's search {CUDNN_SEARCH_S} s per layer-pass; host {HOST_CALL_S:.3f} s "
          f"per call; model {MODEL_SETUP_S:.0f} s per batch size + {MODEL_CALL_S} s per timed call")  # fmt: skip
    print(f"stages d (and e, the report's), run only while time is left: {optional:.0f} s more")
    print(f"estimated device time: {total + compile_s:.0f} s")
    return 0


def quick_run(device: str, reports, table, timers: context.Timers, budget_s: float, gpu: bool, **options) -> QuickRun:
    """A `QuickRun` whose budget starts now."""
    return QuickRun(device=device, reports=reports, table=table, timers=timers,
                    deadline=time.monotonic() + budget_s, gpu=gpu, **options)  # fmt: skip


def torchvision_resnet50() -> Callable[[], torch.nn.Module] | None:
    """torchvision's ResNet-50 factory (random weights, no download), or None without torchvision."""
    try:
        from torchvision.models import resnet50
    except ImportError:
        return None
    return lambda: resnet50(weights=None)
