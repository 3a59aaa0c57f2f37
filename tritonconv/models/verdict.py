"""What tuning a model found: per (layer, pass), the best Triton route and its time, torch's time,
the route chosen and how much faster than torch the layer now runs, and one line for the model.

A layer's time is its problem's tuned median; a layer called twice counts twice in the model's
total, as it runs twice. The model line compares the convolution time the model spends with
torch's kernels alone against the time with the chosen routes: since torch's kernel is one of
the routes and is chosen wherever it is faster beyond the noise, the second is never measurably
the larger.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..routes.registry import TRANSPOSED_PASSES, Pass, Variant
from ..tuning.cache import TuningCache, problem_key
from ..tuning.session import TuneSummary, cached_entry
from ..tuning.tuner import best_triton, tf32_key

if TYPE_CHECKING:
    from .tune_model import RecordedConv

COLUMNS = ("layer", "pass", "problem", "triton_route", "triton_ms", "torch_ms", "choice", "chosen_ms", "speedup")


@dataclass(frozen=True)
class LayerPassVerdict:
    """One pass of one convolution call. Times in ms (None: not measured); `choice` is the route the
    layer now runs ('torch' or a Triton route; None when nothing was tuned); `speedup` is torch's
    time over the chosen route's (1.0 where torch's kernel was chosen)."""

    layer: str
    pass_name: str
    problem: str
    triton_route: str | None
    triton_ms: float | None
    torch_ms: float | None
    choice: str | None

    @property
    def chosen_ms(self) -> float | None:
        return self.torch_ms if self.choice == Variant.TORCH else self.triton_ms

    @property
    def speedup(self) -> float | None:
        chosen = self.chosen_ms
        return None if self.torch_ms is None or not chosen else self.torch_ms / chosen

    @property
    def served_by_triton(self) -> bool:
        return self.choice is not None and self.choice != Variant.TORCH

    def as_row(self) -> dict[str, object]:
        row = asdict(self)
        return {"layer": row["layer"], "pass": row["pass_name"], "problem": row["problem"],
                "triton_route": row["triton_route"], "triton_ms": row["triton_ms"], "torch_ms": row["torch_ms"],
                "choice": row["choice"], "chosen_ms": self.chosen_ms, "speedup": self.speedup}  # fmt: skip


@dataclass
class ModelVerdict:
    """Every (layer, pass) of a tuned model (`rows`, in call order) and the tuning run's summary."""

    rows: list[LayerPassVerdict]
    summary: TuneSummary = field(default_factory=TuneSummary)

    # The tuning summary's counts, as `tune_model` returned them before it returned a verdict.
    @property
    def tuned(self) -> int:
        return self.summary.tuned

    @property
    def cached(self) -> int:
        return self.summary.cached

    @property
    def failed(self) -> int:
        return self.summary.failed

    @property
    def problems(self) -> list:
        return self.summary.problems

    @property
    def served_by_triton(self) -> int:
        return sum(row.served_by_triton for row in self.rows)

    def totals(self) -> tuple[float, float] | None:
        """(ms with torch's kernels alone, ms with the chosen routes) over every row, or None when a
        row lacks either time (torch not timed, nothing tuned)."""
        if not self.rows or any(row.torch_ms is None or row.chosen_ms is None for row in self.rows):
            return None
        return math.fsum(row.torch_ms for row in self.rows), math.fsum(row.chosen_ms for row in self.rows)

    def line(self) -> str:
        """'tritonconv serves 23 of 69 layer-passes; convolution time 41.2 ms -> 35.0 ms (1.18x over torch)'."""
        served = f"tritonconv serves {self.served_by_triton} of {len(self.rows)} layer-passes"
        totals = self.totals()
        if totals is None:
            return f"{served}; torch's time not measured for every layer-pass"
        torch_ms, chosen_ms = totals
        ratio = torch_ms / chosen_ms if chosen_ms else math.inf
        return f"{served}; convolution time {torch_ms:.4g} ms -> {chosen_ms:.4g} ms ({ratio:.2f}x over torch)"

    def table(self) -> str:
        """The rows as aligned text, then the model line."""
        cells = [COLUMNS, *([_cell(value) for value in row.as_row().values()] for row in self.rows)]
        widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
        lines = ["  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)) for row in cells]
        return "\n".join([*lines, self.line()])

    def write_csv(self, path: str | Path) -> Path:
        """The rows as CSV (columns `COLUMNS`), for a spreadsheet or `pandas.read_csv`."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(row.as_row() for row in self.rows)
        return path


def _cell(value: object) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def verdict_of(
    calls: Iterable[RecordedConv], passes: Sequence[str], cache: TuningCache, summary: TuneSummary | None = None
) -> ModelVerdict:
    """The verdict of recorded calls from the entries `cache` holds for them (a transposed call's
    pass read from the pass of its underlying convolution that serves it)."""
    rows = []
    for call in calls:
        for pass_name in passes:
            served = TRANSPOSED_PASSES[Pass(pass_name)] if call.transposed else Pass(pass_name)
            entry = cached_entry(cache, call.problem, served) or {}
            triton = best_triton(entry) or {}
            triton_ms, triton_route = triton.get("median_ms"), triton.get("variant")
            rows.append(LayerPassVerdict(
                layer=call.layer or "(model)", pass_name=str(pass_name),
                problem=problem_key(call.problem, served, tf32_key()), triton_route=_name(triton_route),
                triton_ms=triton_ms, torch_ms=entry.get("torch_ms"), choice=_name(entry.get("variant")),
            ))  # fmt: skip
    return ModelVerdict(rows, summary or TuneSummary())


def _name(variant: object) -> str | None:
    return None if variant is None else str(variant)
