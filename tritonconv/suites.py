"""Shape suites: real networks' conv layers as data (CSV files in the top-level `autotune/` folder,
installed as `tritonconv.autotune`), or a user's own CSV with the same columns."""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from .arithmetic import CHANNELS_LAST, ConvProblem, make_problem

COLUMNS = ("layer", "count", "n", "c", "h", "w", "k", "r", "s", "stride_h", "stride_w", "pad_h", "pad_w",
           "dil_h", "dil_w", "groups")  # fmt: skip


@dataclass(frozen=True)
class SuiteLayer:
    name: str
    count: int
    problem: ConvProblem
    suite: str = ""  # the suite's name (a CSV's file name without .csv)


def suites_folder() -> Path:
    """The installed `tritonconv.autotune` data, or the repository's `autotune/` when run from a checkout."""
    try:
        return Path(str(importlib.resources.files("tritonconv.autotune")))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[1] / "autotune"


def available_suites() -> list[str]:
    return sorted(path.stem for path in suites_folder().glob("*.csv"))


def load_suite(
    name_or_path: str, *, batch: int | None = None, dtype: torch.dtype = torch.bfloat16, layout: str = CHANNELS_LAST
) -> list[SuiteLayer]:
    """The layers of a named suite (see `available_suites`) or of a CSV file, as problems; `batch`
    overrides every layer's N."""
    path = Path(name_or_path)
    if not path.suffix:
        path = suites_folder() / f"{name_or_path}.csv"
        if not path.exists():
            raise ValueError(f"unknown suite {name_or_path!r}; known: {', '.join(available_suites())}")
    table = pd.read_csv(path, comment="#")  # '#' lines say where the shapes come from
    missing = [column for column in COLUMNS if column not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; a suite has columns {', '.join(COLUMNS)}")
    layers = []
    for row in table.itertuples(index=False):
        problem = make_problem(
            n=batch or int(row.n), c=int(row.c), h=int(row.h), w=int(row.w), k=int(row.k), r=int(row.r),
            s=int(row.s), stride=(int(row.stride_h), int(row.stride_w)), padding=(int(row.pad_h), int(row.pad_w)),
            dilation=(int(row.dil_h), int(row.dil_w)), groups=int(row.groups), dtype=dtype, layout=layout,
        )  # fmt: skip
        layers.append(SuiteLayer(str(row.layer), int(row.count), problem, path.stem))
    return layers
