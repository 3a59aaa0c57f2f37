"""`make gpu-report`: everything a GPU should measure, as resumable steps that each fit a short run.

A GPU is lent for short runs of at most 10 minutes per command. So the work is a fixed list of
steps, each a command with a time limit under 9 minutes: the GPU tests, tuning each suite's passes
into the shipped table (`autotune/<device>.json`), the suite benchmarks against cuDNN and Inductor,
the host-time benchmark and profile, and the static-vs-driver register comparison, all writing
into `reports/<device>/`. One invocation runs pending steps until its time budget is spent and
says how many are left; the next invocation goes on from there. A step is done for a code version
(a digest of the package and its suites) and a device; a step that ran out of time is run again
(tuning keeps what it finished: its cache is the shipped table). `--dry-run` prints the plan.

Usage: python -m tritonconv.tools.gpu_report [--dry-run] [--budget SECONDS]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from ..problem.suites import suites_folder

ROOT = Path(__file__).resolve().parents[2]
STEP_LIMIT_S = 540  # under the 10-minute limit of one lent-GPU command, with room to start and save
RUN_BUDGET_S = 560
SUITES = ("resnet50", "resnext50_32x4d", "mobilenetv2", "convnext_t", "ssm")
PASSES = ("fwd", "dgrad", "wgrad")
DTYPES = ("bfloat16", "float16")
STATE_FILE = ".gpu-report.json"


@dataclasses.dataclass(frozen=True)
class Step:
    """One command of the report, with the time it may take (its limit, not a measurement)."""

    name: str
    command: tuple[str, ...]
    limit_s: int = STEP_LIMIT_S
    env: tuple[tuple[str, str], ...] = ()


def steps(device: str) -> list[Step]:
    """The report's steps for `device` (its slug: the folder and table name), most wanted first:
    the GPU tests, then ResNet-50 (tuned, benchmarked, host-timed, profiled, registers compared with
    the driver's), then the other suites."""
    out = f"reports/{device}"
    shipped = (("TRITONCONV_CACHE_DIR", str(suites_folder())),)  # tuning writes autotune/<device>.json

    def tune(suite: str) -> list[Step]:
        return [_step(f"tune {suite} {pass_name}", "tritonconv", "tune", "--suite", suite, "--pass", pass_name,
                      "--dtype", ",".join(DTYPES), env=shipped) for pass_name in PASSES]  # fmt: skip

    def bench(suite: str) -> list[Step]:
        return [_step(f"bench {suite} {dtype}", "tritonconv", "bench", "--suite", suite, "--pass",
                      ",".join(PASSES), "--dtype", dtype, "--layout", "channels_last", "--baseline",
                      "torch,inductor", "--out", f"{out}/{suite}_{dtype}.csv") for dtype in DTYPES]  # fmt: skip

    first, *others = SUITES
    plan = [_step("gpu tests", "pytest", "-q", "-m", "gpu"), *tune(first), *bench(first)]
    plan.append(_step("host time resnet50", "tritonconv.tools.bench.host", "--out", f"{out}/host_resnet50.csv"))
    profile = f"{out}/profile_resnet50_bf16_channels_last.csv"
    plan.append(_step("profile resnet50", "tritonconv.tools.bench.profile", "--out", profile))
    against = ("tritonconv.tools.kernel_gate", "--against-driver", "--out", f"{out}/static_vs_driver.csv")
    plan.append(_step("static vs driver", *against))
    for suite in others:
        plan += [*tune(suite), *bench(suite)]
    return plan


def _step(name: str, module: str, *arguments: str, env: tuple[tuple[str, str], ...] = ()) -> Step:
    return Step(name, (sys.executable, "-m", module, *arguments), env=env)


def code_version() -> str:
    """A digest of what decides the results: the package's sources and the shape suites."""
    digest = hashlib.sha256()
    for path in sorted([*(ROOT / "tritonconv").rglob("*.py"), *suites_folder().glob("*.csv")]):
        digest.update(path.relative_to(ROOT).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def read_state(path: Path) -> dict:
    """A resumable run's record of its steps: name -> {version, status, seconds}."""
    return json.loads(path.read_text()) if path.exists() else {}


def write_state(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(state, indent=1, sort_keys=True) + "\n")


def load_state(device: str) -> dict:
    return read_state(ROOT / "reports" / device / STATE_FILE)


def save_state(device: str, state: dict) -> None:
    write_state(ROOT / "reports" / device / STATE_FILE, state)


def plan_table(device: str, version: str) -> pd.DataFrame:
    """Each step with its limit and whether it is done for this code version and device."""
    state = load_state(device)
    rows = []
    for step in steps(device):
        record = state.get(step.name, {})
        done = record.get("version") == version and record.get("status") == "done"
        rows.append({
            "step": step.name, "limit_min": step.limit_s / 60, "status": record.get("status", "pending"),
            "took_s": record.get("seconds"), "current": done, "command": " ".join(step.command[2:]),
        })  # fmt: skip
    return pd.DataFrame(rows)


def run(device: str, budget_s: float, dry_run: bool = False) -> int:
    """Run pending steps while the budget lasts; print the table of steps; 0 unless a step failed."""
    version = code_version()
    if dry_run:
        print(f"device {device}, code version {version}; each step's limit, not its measured time:")
        print(_text(plan_table(device, version)))
        return 0
    state, start, failed = load_state(device), time.monotonic(), 0
    for step in steps(device):
        record = state.get(step.name, {})
        if record.get("version") == version and record.get("status") == "done":
            continue
        left = budget_s - (time.monotonic() - start)
        if left < min(step.limit_s, 60):
            break
        print(f"== {step.name}: {' '.join(step.command[1:])}", flush=True)
        began = time.monotonic()
        try:
            ran = subprocess.run(step.command, cwd=ROOT, env={**os.environ, **dict(step.env)},
                                 timeout=min(step.limit_s, left))  # fmt: skip
            status = "done" if ran.returncode == 0 else "failed"
        except subprocess.TimeoutExpired:
            status = "timed out"
        failed += status == "failed"
        state[step.name] = {"version": version, "status": status, "seconds": round(time.monotonic() - began, 1)}
        save_state(device, state)
    table = plan_table(device, version)
    print(_text(table))
    pending = int((~table["current"]).sum())
    print(f"{pending} steps left" + (": run `make gpu-report` again" if pending else "; commit reports/ and autotune/"))
    return 1 if failed else 0


def _text(table: pd.DataFrame) -> str:
    lines = [f"{'step':32s} {'limit':>7s} {'status':10s} {'took':>8s}  command"]
    for row in table.to_dict("records"):
        took = "" if row["took_s"] is None or not row["current"] else f"{row['took_s']:.0f} s"
        status = row["status"] if row["current"] or row["status"] == "pending" else f"{row['status']} (old)"
        lines.append(f"{row['step']:32s} {row['limit_min']:5.1f} m {status:10s} {took:>8s}  {row['command']}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="print the steps and their limits, run nothing")
    parser.add_argument("--budget", type=float, default=RUN_BUDGET_S, help="seconds this invocation may run")
    parser.add_argument("--device", help="the device slug (default: this GPU's)")
    args = parser.parse_args()
    device = args.device
    if device is None:
        from ..tuning.fingerprint import device_slug

        device = device_slug()
    return run(device, args.budget, args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
