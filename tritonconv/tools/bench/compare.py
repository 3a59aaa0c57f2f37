"""`tritonconv compare OLD.csv NEW.csv`: what got faster or slower between two bench reports.

Rows are matched on suite, layer, pass, shape, dtype and layout. A change within the noise band
(5% by default) is reported as unchanged, row by row and overall. The command exits 1 when any row
got slower beyond the band (as `pytest-benchmark --benchmark-compare-fail` does). The rows print as
an aligned table (`text`), a Markdown table (`md`, for a pull request) or CSV (`csv`, for a script).

Two runs are compared only on the same machine in the same state, as far as the reports tell: the
same `device`, and, per dtype, measured peaks (the matmul and copy rates `bench` measures at its
start) within PEAK_TOLERANCE of each other. Otherwise every row is "not comparable", the summary says
why, and the command exits 3: on a shared machine the interpreter's times moved by -44% to +43%
between two runs of the same code while its measured peak halved, which is not a regression.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ..choices import COMPARE_FORMATS
from .report import DEPTH_COLUMNS, SHAPE_COLUMNS, geomean

KEY = ["suite", "layer", "pass", *SHAPE_COLUMNS, "dtype", "layout"]
FORMATS = COMPARE_FORMATS
PEAK_TOLERANCE = 0.25  # measured peaks further apart than this: the machine changed between the runs
NOT_COMPARABLE = "not comparable"
PEAK_COLUMNS = ("peak_tflops", "peak_gbps")


def compare(
    old_path: str | Path, new_path: str | Path, noise: float = 0.05, format: str = "text"
) -> tuple[pd.DataFrame, str]:
    """(joined table with `ratio` = new triton_ms / old triton_ms and a `verdict`, printable text in
    `format`: one of FORMATS)."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {format!r}")
    old, new = (_read(path) for path in (old_path, new_path))
    key = [*KEY, *(column for column in DEPTH_COLUMNS if column in old.columns and column in new.columns)]
    joined = old[[*key, "triton_ms", "variant"]].merge(
        new[[*key, "triton_ms", "variant"]], on=key, suffixes=("_old", "_new"), how="inner"
    )
    if joined.empty:
        raise ValueError(f"{old_path} and {new_path} share no (suite, layer, pass, shape, dtype, layout) rows")
    joined["ratio"] = joined["triton_ms_new"] / joined["triton_ms_old"]
    joined["verdict"] = joined["ratio"].map(
        lambda ratio: "faster" if ratio < 1 - noise else "slower" if ratio > 1 + noise else "unchanged"
    )
    changed = machine_change(old, new)
    if changed:
        joined["verdict"] = NOT_COMPARABLE
    joined = joined.sort_values("ratio", kind="stable").reset_index(drop=True)
    if format == "csv":
        return joined, joined.to_csv(index=False).rstrip("\n")
    rows = (_markdown_rows if format == "md" else _text_rows)(joined)
    summary = _summary(joined, old, new, noise)
    if changed:
        summary = [f"not compared: {changed}; rerun both on one machine in the same state", *summary[1:]]
    return joined, "\n".join([*rows, *summary])


def machine_change(old: pd.DataFrame, new: pd.DataFrame) -> str | None:
    """Why two reports' machines differ, from what they record (device, measured peaks), or None."""
    if "device" in old.columns and "device" in new.columns:
        before, after = set(old["device"].dropna()), set(new["device"].dropna())
        if before and after and before != after:
            return f"the device changed ({', '.join(sorted(before))} -> {', '.join(sorted(after))})"
    for column in PEAK_COLUMNS:
        if column not in old.columns or column not in new.columns:
            continue
        peaks = (
            old.groupby("dtype")[column]
            .median()
            .to_frame("old")
            .join(new.groupby("dtype")[column].median().to_frame("new"), how="inner")
        )
        for dtype, (before, after) in peaks.iterrows():
            if before > 0 and abs(after / before - 1) > PEAK_TOLERANCE:
                what = "matmul TFLOP/s" if column == "peak_tflops" else "copy GB/s"
                return f"the machine's measured {dtype} {what} moved from {before:.3g} to {after:.3g}"
    return None


def _text_rows(joined: pd.DataFrame) -> list[str]:
    header = f"{'layer':<28} {'pass':<6} {'dtype':<9} {'layout':<14} {'old ms':>10} {'new ms':>10} {'new/old':>8}"
    lines = [f"{header}  verdict"]
    for row in joined.to_dict("records"):  # a dict: 'pass' and 'dtype' clash as attributes
        lines.append(
            f"{row['layer'][:28]:<28} {row['pass']:<6} {row['dtype']:<9} {row['layout']:<14} "
            f"{row['triton_ms_old']:>10.4f} {row['triton_ms_new']:>10.4f} {row['ratio']:>8.3f}  {row['verdict']}"
            f"{_variant_change(row)}"
        )
    return lines


def _markdown_rows(joined: pd.DataFrame) -> list[str]:
    lines = ["| layer | pass | dtype | layout | old ms | new ms | new/old | verdict |",
             "|---|---|---|---|---:|---:|---:|---|"]  # fmt: skip
    for row in joined.to_dict("records"):
        lines.append(
            f"| {row['layer']} | {row['pass']} | {row['dtype']} | {row['layout']} | {row['triton_ms_old']:.4f} | "
            f"{row['triton_ms_new']:.4f} | {row['ratio']:.3f} | {row['verdict']}{_variant_change(row)} |"
        )
    return [*lines, ""]


def _variant_change(row: dict) -> str:
    old_variant, new_variant = row["variant_old"], row["variant_new"]
    return "" if old_variant == new_variant else f" ({old_variant} -> {new_variant})"


def _summary(joined: pd.DataFrame, old: pd.DataFrame, new: pd.DataFrame, noise: float) -> list[str]:
    lines = []
    counts = joined["verdict"].value_counts()
    change = geomean(joined["ratio"])
    lines.append(
        f"{len(joined)} rows: {counts.get('faster', 0)} faster, {counts.get('slower', 0)} slower, "
        f"{counts.get('unchanged', 0)} unchanged (noise band {noise:.0%}); geomean new/old "
        f"{change:.3f}" + ("" if math.isnan(change) else f" ({_overall(change, noise)})")
    )
    unmatched = len(old) + len(new) - 2 * len(joined)
    if unmatched:
        lines.append(f"{unmatched} rows appear in only one of the files")
    return lines


def _read(path: str | Path) -> pd.DataFrame:
    """A bench report, or a one-line ValueError naming the file and what is wrong with it."""
    try:
        table = pd.read_csv(path)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not a bench CSV ({type(error).__name__})") from None
    missing = [column for column in [*KEY, "triton_ms", "variant"] if column not in table.columns]
    if missing:
        raise ValueError(f"{path}: not a bench report (missing columns {', '.join(missing)})")
    return table


def _overall(change: float, noise: float) -> str:
    """The geomean's verdict, with the rows' noise band: two runs of the same code are 'unchanged'."""
    if change < 1 - noise:
        return "faster overall"
    if change > 1 + noise:
        return "slower overall"
    return "unchanged overall, within the noise band"
