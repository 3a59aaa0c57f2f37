"""`make gpu-report`: the quick run's engine with a longer plan, for a user's GPU or a longer window.

The report is the quick run (stages a-d: correctness, tuning with torch's kernel competing, the
benchmarks against cuDNN, host time, the model) followed by stages e, which run the project's other
GPU commands under the same state, budget and resume logic (`plan.execute`):
  e gpu tests                 pytest -m gpu
  e profile <main suite>      tools.bench.profile (per-kernel time of every route)
  e static vs driver          tools.kernel_gate --against-driver (registers: compile-only vs the driver)
  e inductor <suite>          `tritonconv bench --baseline torch,inductor` per suite (torch.compile, max-autotune)
  e fp16 <suite>              the suite tuned in float16, torch competing, its verdict as CSV (a-d are bf16)
Each command stage has a time limit (its estimate in the plan); it starts only while its limit fits in
the time left, and one that runs out of time stays pending for the next invocation.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .context import OutOfTime, QuickRun

COMMAND_LIMIT_S = 540  # one command of a lent GPU, with room to start and save
REPORT_BUDGET_S = 3600  # one invocation on a user's GPU; a lent one passes --budget 510 and runs it again
ROOT = Path(__file__).resolve().parents[4]
FP16 = ("float16",)


def command(run: QuickRun, argv: tuple[str, ...], limit_s: float, env: dict[str, str] | None = None) -> None:
    """Run `python -m argv...` in the project's folder within `limit_s` and the run's time left;
    OutOfTime when that ends first (the stage stays pending), RuntimeError when it fails."""
    timeout = min(limit_s, run.time_left())
    if timeout <= 0:
        raise OutOfTime(f"the budget ended before {' '.join(argv)}")
    try:
        done = subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, env={**os.environ, **(env or {})},
                              timeout=timeout)  # fmt: skip
    except subprocess.TimeoutExpired:
        raise OutOfTime(f"{' '.join(argv)} ran past {timeout:.0f} s") from None
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}")


def command_stages(run: QuickRun, stage_type: type) -> list:
    """The report's e stages (module docstring), each a `plan.Stage` running one command."""
    out = f"reports/{run.device}"
    main = Path(run.main_suite).stem

    def stage(name: str, files: tuple[str, ...], *argv: str, limit_s: float = COMMAND_LIMIT_S) -> object:
        return stage_type(
            name, files, lambda r: command(r, argv, limit_s), lambda r: [], lambda r: {"limit s": limit_s},
            lambda counts: counts["limit s"], up_front=False, optional=True,
        )  # fmt: skip

    profile = f"{out}/profile_{main}_bf16_channels_last.csv"
    stages = [
        stage("e gpu tests", ("pytest's output",), "pytest", "-q", "-m", "gpu"),
        stage(f"e profile {main}", (Path(profile).name,), "tritonconv.tools.bench.profile", "--out", profile),
        stage("e static vs driver", ("static_vs_driver.csv",), "tritonconv.tools.kernel_gate", "--against-driver",
              "--out", f"{out}/static_vs_driver.csv"),
    ]  # fmt: skip
    suites = [(suite, Path(suite).stem) for suite in (run.main_suite, *run.more_suites)]
    for suite, name in suites:
        stages.append(stage(f"e inductor {name}", (f"{name}_inductor.csv",), "tritonconv", "bench", "--suite", suite,
                            "--baseline", "torch,inductor", "--out", f"{out}/{name}_inductor.csv"))  # fmt: skip
    for suite, name in suites:
        verdict = f"{out}/{name}_float16_verdict.csv"
        tune = ("tritonconv", "tune", "--suite", suite, "--pass", "fwd,dgrad,wgrad", "--dtype", *FP16)
        stages.append(stage(f"e fp16 {name}", (Path(verdict).name, "the shipped table"), *tune, "--report", verdict))
    return stages
