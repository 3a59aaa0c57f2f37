"""What every stage of the quick run shares: where it writes, how it times, when its time ends.

`Timers` is the one place a stage's time comes from, so a rehearsal on the CPU injects its own
(`rehearsal_timers`: fixed times) and the stages, files and resume logic run exactly as they would
on the GPU. A `Journal` is a stage's rows as it makes them, one
JSON line each, so a run killed inside a stage resumes it without redoing the rows it finished.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ....problem.suites import suites_folder
from ....tuning.cache import TuningCache

ROOT = Path(__file__).resolve().parents[4]

Call = Callable[[], object]
# Timed passes are short and many: shorter do_bench windows than a full report's (25 ms warm-up, 100 ms).
TUNE_WARMUP_MS, TUNE_REP_MS = 10, 30
BENCH_WARMUP_MS, BENCH_REP_MS = 10, 40
HOST_CALLS, HOST_REPEATS = 100, 5


def code_version() -> str:
    """A digest of what decides the results: the package's sources and the shape suites. A stage is
    done for one code version; a change redoes it."""
    digest = hashlib.sha256()
    for path in sorted([*(ROOT / "tritonconv").rglob("*.py"), *suites_folder().glob("*.csv")]):
        digest.update(path.relative_to(ROOT).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def read_state(path: Path) -> dict:
    """A resumable run's record of its stages: name -> {version, status, seconds}."""
    return json.loads(path.read_text()) if path.exists() else {}


def write_state(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(state, indent=1, sort_keys=True) + "\n")


class OutOfTime(Exception):
    """The run's budget ended inside a stage: the stage stays pending and resumes next run."""


@dataclasses.dataclass(frozen=True)
class Timers:
    """How the run times things: `samples` (a tuning candidate: ms samples), `eager` (median ms,
    host work included), `graph` (median ms of CUDA-graph replays), `host` (µs per call)."""

    samples: Callable[[Call], Sequence[float]]
    eager: Callable[[Call], float]
    graph: Callable[[Call], float]
    host: Callable[[Call], float]


def gpu_timers() -> Timers:
    """`triton.testing.do_bench` medians (warm-up first, L2 cleared between runs) and CUDA-graph replays."""
    import triton.testing

    from ..host import host_us

    def graph(fn: Call) -> float:
        try:
            return triton.testing.do_bench_cudagraph(fn, rep=BENCH_REP_MS, return_mode="median")
        except Exception as error:  # a call that cannot be captured: no graph time, and why
            print(f"  (graph capture failed: {type(error).__name__}: {error})", flush=True)
            return math.nan

    return Timers(
        samples=lambda fn: triton.testing.do_bench(fn, warmup=TUNE_WARMUP_MS, rep=TUNE_REP_MS, return_mode="all"),
        eager=lambda fn: triton.testing.do_bench(fn, warmup=BENCH_WARMUP_MS, rep=BENCH_REP_MS, return_mode="median"),
        graph=graph,
        host=lambda fn: host_us(fn, HOST_CALLS, HOST_REPEATS),
    )


def rehearsal_timers(ms: float = 1.0) -> Timers:
    """Every time is `ms` (µs for host time). The eager and host timers run their call once more (a
    call that breaks when repeated shows); the stages have run each call already before timing it
    (tuning's and the benchmark's checks), so the others do not."""

    def once(fn: Call) -> float:
        fn()
        return ms

    return Timers(samples=lambda fn: [ms], eager=once, graph=lambda fn: ms, host=once)


@dataclasses.dataclass
class QuickRun:
    """One invocation of the quick run: its device, folders, timers, budget and what it covers."""

    device: str  # the device slug: reports/<device>/ and the table autotune/<device>.json
    reports: Path
    table: Path
    timers: Timers
    deadline: float  # time.monotonic() at which the budget ends
    gpu: bool
    main_suite: str = "resnet50"
    more_suites: tuple[str, ...] = ("ssm", "resnext50_32x4d", "mobilenetv2", "convnext_t", "replknet31b")
    serving_suite: str | None = "ssm"  # the causal conv1d's serving cases (`problem/serving.py`), first among d
    batch: int | None = None  # the suites' own (N=32)
    dtype: torch.dtype = torch.bfloat16
    layout: str = "channels_last"
    top_k: int = 8
    correctness_suite: str = "smoke"
    correctness_batch: int | None = 4
    precisions: tuple[str, ...] = ("bf16", "fp16", "tf32", "fp32 ieee")
    layouts: tuple[str, ...] = ("channels_last", "contiguous")
    model: Callable[[], torch.nn.Module] | None = None  # torchvision's resnet50 where it is installed
    model_name: str = "torchvision resnet50"
    model_input: tuple[int, ...] = (3, 224, 224)
    model_batches: tuple[int, ...] = (32, 128)
    export: Path | None = None  # a folder each finished stage's files are copied to (the lent GPU's $OUT)
    report: bool = False  # `make gpu-report`: the e stages after a-d (`report.py`)

    @property
    def torch_device(self) -> torch.device:
        return torch.device("cuda" if self.gpu else "cpu")

    def time_left(self) -> float:
        return self.deadline - time.monotonic()

    def check_time(self, what: str) -> None:
        if self.time_left() <= 0:
            raise OutOfTime(f"the budget ended before {what}")

    def cache(self) -> TuningCache:
        """The table tuning fills (the shipped one, `autotune/<device>.json`, on a GPU), as the one
        object every lookup of this process shares."""
        from ....tuning.session import cache_at

        return cache_at(self.table)

    def export_files(self) -> None:
        """Copy the reports folder's files and the table to `export` (what a lent GPU's $OUT sends back
        even when the command is killed)."""
        if self.export is None:
            return
        target = self.export / "reports" / self.device
        target.mkdir(parents=True, exist_ok=True)
        for path in self.reports.iterdir():
            if path.is_file():
                shutil.copy2(path, target / path.name)
        if self.table.exists():
            (self.export / "autotune").mkdir(exist_ok=True)
            shutil.copy2(self.table, self.export / "autotune" / self.table.name)

    def journal(self, stage: str) -> Journal:
        return Journal(self.reports / ".gpu-quick" / f"{stage.replace(' ', '_')}.jsonl")


class Journal:
    """A stage's rows so far, one JSON object per line, keyed by a "key" field."""

    def __init__(self, path: Path):
        self.path = path

    def rows(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def keys(self) -> set[str]:
        return {row["key"] for row in self.rows()}

    def add(self, rows: Sequence[dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as file:
            for row in rows:
                file.write(json.dumps(row, default=str) + "\n")

    def close(self) -> None:
        """The stage's files are written: its journal is no longer needed."""
        self.path.unlink(missing_ok=True)
