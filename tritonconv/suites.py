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
    try:
        table = pd.read_csv(path, comment="#", dtype=str, keep_default_na=False)  # '#' lines: where shapes come from
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not a suite CSV ({type(error).__name__}: {' '.join(str(error).split())})") from None
    missing = [column for column in COLUMNS if column not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; a suite has columns {', '.join(COLUMNS)}")
    if table.empty:
        raise ValueError(f"{path}: no layers")
    layers = []
    for index, row in enumerate(table.to_dict("records")):
        where = f"{path}, row {index + 1} (layer {row['layer']!r})"  # data rows, counted from 1
        sizes = {}
        for column in COLUMNS[1:]:
            try:
                sizes[column] = int(row[column])
            except ValueError:
                raise ValueError(f"{where}, column {column!r}: expected an integer, got {row[column]!r}") from None
        try:
            problem = make_problem(
                n=batch or sizes["n"], c=sizes["c"], h=sizes["h"], w=sizes["w"], k=sizes["k"], r=sizes["r"],
                s=sizes["s"], stride=(sizes["stride_h"], sizes["stride_w"]), padding=(sizes["pad_h"], sizes["pad_w"]),
                dilation=(sizes["dil_h"], sizes["dil_w"]), groups=sizes["groups"], dtype=dtype, layout=layout,
            )  # fmt: skip
        except (ValueError, RuntimeError) as error:
            raise ValueError(f"{where}: {' '.join(str(error).split())}") from None
        layers.append(SuiteLayer(str(row["layer"]), sizes["count"], problem, path.stem))
    return layers
