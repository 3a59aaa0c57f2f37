"""What every study's command line shares: the suites, batch and dtype it runs, the GPU it needs, and
a stamped table printed and written."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import pandas as pd
import torch

from ...problem.suites import SuiteLayer, load_suite
from .timing import require_gpu, stamp

STAMP_COLUMNS = ("device", "torch_version", "triton_version", "timestamp")  # what `stamp` adds


def study_layers(suites: str, batch: int | None, dtype: torch.dtype) -> list[SuiteLayer]:
    """The layers of comma-separated suites, at `batch` (None: each suite's own), channels_last."""
    return [layer for suite in suites.split(",") for layer in load_suite(suite, batch=batch, dtype=dtype)]


def main_for(
    command: str, doc: str | None, study: Callable[[list[SuiteLayer]], pd.DataFrame], default_suites: str,
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
) -> tuple[pd.DataFrame, argparse.Namespace]:  # fmt: skip
    """Parse the study's arguments, run it on a GPU, print the table and write it with `--out`."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default=default_suites, help="comma-separated suite names or CSV paths")
    parser.add_argument("--batch", type=int, help="override every layer's batch size (default: the suite's)")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--out", help="also write the table to this CSV file")
    if extra is not None:
        extra(parser)
    args = parser.parse_args()
    require_gpu(command)
    table = stamp(study(study_layers(args.suite, args.batch, getattr(torch, args.dtype))))
    pd.set_option("display.width", 250)
    print(table.drop(columns=list(STAMP_COLUMNS)).to_string(index=False))
    print(f"\n{table['device'].iloc[0]}, torch {torch.__version__}, triton {table['triton_version'].iloc[0]}")
    if args.out:
        table.to_csv(args.out, index=False)
        print(f"wrote {args.out}")
    return table, args
