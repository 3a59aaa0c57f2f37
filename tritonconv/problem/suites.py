"""Shape suites: real networks' conv layers as data (CSV files in the top-level `autotune/` folder,
installed as `tritonconv.autotune`), or a user's own CSV with the same columns."""

from __future__ import annotations

import csv
import importlib.resources
from dataclasses import dataclass
from pathlib import Path

import torch

from .arithmetic import CHANNELS_LAST, ConvProblem, make_problem, make_problem_3d

COLUMNS = ("layer", "count", "n", "c", "h", "w", "k", "r", "s", "stride_h", "stride_w", "pad_h", "pad_w",
           "dil_h", "dil_w", "groups")  # fmt: skip
# A suite with 3-D convolutions has these too: input depth, kernel depth, and the depth axis's stride,
# padding and dilation; a row that leaves them empty is a 2-D convolution.
DEPTH_COLUMNS = ("d", "t", "stride_d", "pad_d", "dil_d")


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
        return Path(__file__).resolve().parents[2] / "autotune"


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
    columns, rows = read_commented_csv(path)
    missing = [column for column in COLUMNS if column not in columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; a suite has columns {', '.join(COLUMNS)}")
    if not rows:
        raise ValueError(f"{path}: no layers")
    volumes = any(column in columns for column in DEPTH_COLUMNS)
    missing = [column for column in DEPTH_COLUMNS if volumes and column not in columns]
    if missing:
        raise ValueError(
            f"{path}: missing columns {missing}; a suite of 3-D layers also has {', '.join(DEPTH_COLUMNS)}"
        )
    layers = []
    for index, row in enumerate(rows):
        where = f"{path}, row {index + 1} (layer {row['layer']!r})"  # data rows, counted from 1
        sizes = {}
        volume = volumes and any(str(row[column]).strip() for column in DEPTH_COLUMNS)
        for column in (*COLUMNS[1:], *(DEPTH_COLUMNS if volume else ())):
            try:
                sizes[column] = int(row[column])
            except ValueError:
                raise ValueError(f"{where}, column {column!r}: expected an integer, got {row[column]!r}") from None
        try:
            problem = _problem(sizes, batch, dtype, layout, volume)
        except (ValueError, RuntimeError) as error:
            raise ValueError(f"{where}: {' '.join(str(error).split())}") from None
        layers.append(SuiteLayer(str(row["layer"]), sizes["count"], problem, path.stem))
    return layers


def read_commented_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """(columns, rows as strings) of a CSV whose '#' lines say where its shapes come from. The csv
    module, not pandas: loading a suite is part of tuning, which needs no reporting extra."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(line for line in handle if not line.lstrip().startswith("#"))
            header = [name.strip() for name in next(reader, [])]
            rows = [row for row in reader if any(cell.strip() for cell in row)]
    except (UnicodeDecodeError, csv.Error) as error:
        raise ValueError(f"{path}: not a suite CSV ({type(error).__name__}: {' '.join(str(error).split())})") from None
    for number, row in enumerate(rows, start=1):
        if len(row) > len(header):
            raise ValueError(f"{path}: not a suite CSV (row {number} has {len(row)} fields, the header {len(header)})")
    # A short row's missing cells are empty, so the row's check names the first missing column.
    return header, [dict(zip(header, [cell.strip() for cell in row] + [""] * (len(header) - len(row)), strict=True))
                    for row in rows]  # fmt: skip


def _problem(sizes: dict[str, int], batch: int | None, dtype: torch.dtype, layout: str, volume: bool) -> ConvProblem:
    """A suite row's problem: 2-D, or 3-D with the depth columns first on each axis."""
    axes = ("d", "h", "w") if volume else ("h", "w")
    geometry = {
        name: tuple(sizes[f"{prefix}_{axis}"] for axis in axes)
        for name, prefix in (("stride", "stride"), ("padding", "pad"), ("dilation", "dil"))
    }
    plane = dict(
        n=batch or sizes["n"], c=sizes["c"], h=sizes["h"], w=sizes["w"], k=sizes["k"], r=sizes["r"], s=sizes["s"],
        groups=sizes["groups"], dtype=dtype, layout=layout, **geometry,
    )  # fmt: skip
    return make_problem_3d(**plane, d=sizes["d"], t=sizes["t"]) if volume else make_problem(**plane)
