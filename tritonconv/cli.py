"""The `tritonconv` command: `suites` lists the shape suites, `tune` fills this device's tuning cache.

Without a GPU the kernels run in Triton's interpreter: `tune` still checks every config and fills
the cache (for the interpreter), but its timings mean nothing, and it says so.
"""

from __future__ import annotations

import argparse
import sys

import torch

from .arithmetic import CHANNELS_LAST, CONTIGUOUS
from .runtime import rerun_under_interpreter_without_gpu

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64}


def _csv(choices: tuple[str, ...] | dict):
    def parse(text: str) -> list[str]:
        values = [value.strip() for value in text.split(",") if value.strip()]
        unknown = [value for value in values if value not in choices]
        if unknown or not values:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(choices)}; got {text!r}")
        return values

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tritonconv", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("suites", help="list the shape suites shipped in autotune/")
    tune = commands.add_parser("tune", help="tune a suite's problems into this device's cache")
    tune.add_argument("--suite", required=True, help="a suite name (see `tritonconv suites`) or a CSV path")
    tune.add_argument("--pass", dest="passes", type=_csv(("fwd", "dgrad", "wgrad")), default=["fwd"])
    tune.add_argument("--dtype", type=_csv(DTYPES), default=["bfloat16"])
    tune.add_argument("--layout", type=_csv((CHANNELS_LAST, CONTIGUOUS)), default=[CHANNELS_LAST])
    tune.add_argument("--batch", type=int, help="override every layer's batch size")
    tune.add_argument("--force", action="store_true", help="retune problems the cache already holds")
    tune.add_argument("--max-candidates", type=int, help="time at most this many configs per variant")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "suites":
        from .suites import available_suites, load_suite

        for name in available_suites():
            layers = load_suite(name)
            print(f"{name}: {len(layers)} layers, {sum(layer.count for layer in layers)} convolutions")
        return 0
    rerun_under_interpreter_without_gpu("tritonconv.cli")
    from .suites import load_suite
    from .tuning.session import device_cache, text_progress, tune_problems
    from .tuning.tuner import interpreted

    problems = [
        layer.problem
        for dtype in args.dtype
        for layout in args.layout
        for layer in load_suite(args.suite, batch=args.batch, dtype=DTYPES[dtype], layout=layout)
    ]
    cache = device_cache()
    if interpreted():
        print("no GPU: tuning through the Triton interpreter; its timings say nothing about kernels", file=sys.stderr)
    summary = tune_problems(
        problems, args.passes, cache=cache, force=args.force, max_candidates=args.max_candidates,
        progress=text_progress,
    )  # fmt: skip
    print(f"cache: {cache.path}")
    print(summary.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
