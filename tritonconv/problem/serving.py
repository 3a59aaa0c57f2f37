"""Serving cases of the causal conv1d (`autotune/serving/*.csv`): decode steps and packed prefills as
an inference engine calls them, with the tensors each call takes. They are not convolution problems
(no ConvProblem: states, indices and packed sequences), so they have a suite format of their own."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from .suites import read_commented_csv, suites_folder

SERVING_COLUMNS = ("layer", "count", "kind", "batch", "channels", "width", "tokens")
KINDS = ("decode", "prefill")


@dataclasses.dataclass(frozen=True)
class ServingCase:
    """One call: `decode` is `tokens` new tokens for each of `batch` sequences; `prefill` is `batch`
    prompts packed into `tokens` columns."""

    name: str
    count: int
    kind: str
    batch: int
    channels: int
    width: int
    tokens: int

    def lengths(self) -> list[int]:
        """A prefill's prompt lengths: varied (weights 1 to 5 in turn), summing to `tokens`."""
        weights = [1 + (3 * i) % 5 for i in range(self.batch)]
        lengths = [self.tokens * weight // sum(weights) for weight in weights]
        lengths[-1] += self.tokens - sum(lengths)
        return lengths


def load_serving_suite(name_or_path: str = "ssm") -> list[ServingCase]:
    """The cases of `autotune/serving/<name>.csv` or of a CSV file with SERVING_COLUMNS."""
    path = Path(name_or_path)
    if not path.suffix:
        path = suites_folder() / "serving" / f"{name_or_path}.csv"
    columns, rows = read_commented_csv(path)
    missing = [column for column in SERVING_COLUMNS if column not in columns]
    if not rows or missing:
        raise ValueError(f"{path}: a serving suite has columns {', '.join(SERVING_COLUMNS)} and a row per case")
    cases = []
    for row in rows:
        if row["kind"] not in KINDS:
            raise ValueError(f"{path}: kind must be one of {KINDS}; got {row['kind']!r} ({row['layer']})")
        numbers = {column: int(row[column]) for column in SERVING_COLUMNS[3:]}
        cases.append(ServingCase(row["layer"], int(row["count"]), row["kind"], **numbers))
    return cases


@dataclasses.dataclass
class ServingTensors:
    """A case's operands: x in `dtype` ((B, D, T) for decode, (D, tokens) with tokens outermost for a
    prefill, as the engines keep activations), weight and bias fp32, a cache of 2 * batch state lines
    (W - 1 columns, `dtype`) and the lines the batch uses; a prefill's starts and initial-state flags."""

    x: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    states: torch.Tensor
    indices: torch.Tensor
    starts: torch.Tensor | None = None
    has_state: torch.Tensor | None = None


def serving_tensors(case: ServingCase, device: str, dtype: torch.dtype = torch.bfloat16) -> ServingTensors:
    """Fresh random operands of `case` on `device`."""
    channels, width, batch = case.channels, case.width, case.batch
    weight = torch.randn(channels, width, device=device) / width
    bias = torch.randn(channels, device=device)
    states = torch.randn(2 * batch, channels, width - 1, device=device).to(dtype)
    indices = torch.arange(batch, device=device, dtype=torch.int32) * 2 + 1  # every other line: a larger cache
    if case.kind == "decode":
        x = torch.randn(batch, channels, case.tokens, device=device).to(dtype)
        return ServingTensors(x, weight, bias, states, indices)
    x = torch.randn(case.tokens, channels, device=device).to(dtype).t()
    lengths = torch.tensor([0, *case.lengths()], device=device)
    starts = lengths.cumsum(0).to(torch.int32)
    has_state = torch.arange(batch, device=device) % 2 == 0
    return ServingTensors(x, weight, bias, states, indices, starts, has_state)
