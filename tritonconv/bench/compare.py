"""`tritonconv compare OLD.csv NEW.csv`: what got faster or slower between two bench reports.

Rows are matched on suite, layer, pass, shape, dtype and layout. A change within the noise band
(5% by default) is reported as unchanged, row by row and overall. The command exits 1 when any row
got slower beyond the band (as `pytest-benchmark --benchmark-compare-fail` does).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from .report import SHAPE_COLUMNS, geomean

KEY = ["suite", "layer", "pass", *SHAPE_COLUMNS, "dtype", "layout"]


def compare(old_path: str | Path, new_path: str | Path, noise: float = 0.05) -> tuple[pd.DataFrame, str]:
    """(joined table with `ratio` = new triton_ms / old triton_ms and a `verdict`, printable text)."""
    old, new = (_read(path) for path in (old_path, new_path))
    joined = old[[*KEY, "triton_ms", "variant"]].merge(
        new[[*KEY, "triton_ms", "variant"]], on=KEY, suffixes=("_old", "_new"), how="inner"
    )
    if joined.empty:
        raise ValueError(f"{old_path} and {new_path} share no (suite, layer, pass, shape, dtype, layout) rows")
    joined["ratio"] = joined["triton_ms_new"] / joined["triton_ms_old"]
    joined["verdict"] = joined["ratio"].map(
        lambda ratio: "faster" if ratio < 1 - noise else "slower" if ratio > 1 + noise else "unchanged"
    )
    lines = [f"{'layer':<28} {'pass':<6} {'dtype':<9} {'old ms':>10} {'new ms':>10} {'new/old':>8}  verdict"]
    for row in joined.sort_values("ratio").to_dict("records"):  # a dict: 'pass' and 'dtype' clash as attributes
        old_variant, new_variant = row["variant_old"], row["variant_new"]
        variant = "" if old_variant == new_variant else f" ({old_variant} -> {new_variant})"
        lines.append(
            f"{row['layer'][:28]:<28} {row['pass']:<6} {row['dtype']:<9} {row['triton_ms_old']:>10.4f} "
            f"{row['triton_ms_new']:>10.4f} {row['ratio']:>8.3f}  {row['verdict']}{variant}"
        )
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
    return joined, "\n".join(lines)


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
