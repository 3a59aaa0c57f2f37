"""The `tritonconv` command: `suites` lists the shape suites, `tune` fills this device's tuning cache
with the problems of a shape suite or of a model, `bench` times a suite against torch and writes a
report (CSV, plot, summary), `compare` says what changed between two reports.

Under `torchrun --nproc_per_node=N` (or several nodes) `tune` shards the problems over the ranks,
each on its own GPU, and every rank's results land in every rank's cache. Without a GPU the kernels
run in Triton's interpreter: `tune` still checks every config and fills the cache (for the
interpreter), but its timings mean nothing, and it says so.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import os
import sys
import tempfile
import time
from collections.abc import Callable

import torch

from ..plan.dispatch import PASSES
from ..problem.arithmetic import CHANNELS_LAST, CONTIGUOUS
from ..problem.devices import ARCHES
from ..problem.runtime import rerun_compiled, rerun_under_interpreter_without_gpu
from ..tuning.tuner import ALL_ROUTES, ROUTE_CHOICES
from .choices import BASELINES, COMPARE_FORMATS, GATE_SUITES
from .extras import require_reports

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64}


def _csv(choices: tuple[str, ...] | dict):
    def parse(text: str) -> list[str]:
        values = [value.strip() for value in text.split(",") if value.strip()]
        unknown = [value for value in values if value not in choices]
        if unknown or not values:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(choices)}; got {text!r}")
        return values

    return parse


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(size) for size in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) < 3 or min(shape) <= 0:
        raise argparse.ArgumentTypeError(f"expected positive sizes like 8,3,224,224; got {text!r}")
    return shape


def _at_least(minimum: float, convert: Callable[[str], float], expected: str) -> Callable[[str], float]:
    """An argparse type: `convert(text)`, refused with `expected` in the message below `minimum`."""

    def parse(text: str) -> float:
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not value >= minimum:
            raise argparse.ArgumentTypeError(f"expected {expected}; got {text!r}")
        return value

    return parse


_positive = _at_least(1, int, "a positive integer")
_non_negative = _at_least(0.0, float, "a number >= 0")


def _suite(text: str) -> str:
    """A shipped suite's name or an existing CSV file, checked before any work starts."""
    if text.endswith(".csv"):
        if not os.path.isfile(text):
            raise argparse.ArgumentTypeError(f"no suite file {text!r}")
        return text
    if text not in _suite_names():
        raise argparse.ArgumentTypeError(f"unknown suite {text!r}; known: {', '.join(_suite_names())} (or a .csv path)")
    return text


def _out_csv(text: str) -> str:
    """A report path: it must end in .csv (the plot and summary go beside it), and its folder must be
    writable or creatable, so a bad path fails now and not after the whole benchmark."""
    if not text.endswith(".csv"):
        raise argparse.ArgumentTypeError(
            f"expected a path ending in .csv (OUT.png and OUT.md go beside it); got {text!r}"
        )
    return _writable(text)


def _report_csv(text: str) -> str:
    """`tune --report`: a CSV path whose folder is writable or creatable."""
    if not text.endswith(".csv"):
        raise argparse.ArgumentTypeError(f"expected a path ending in .csv; got {text!r}")
    return _writable(text)


def _writable(text: str) -> str:
    """`text`, once a file can be created in its folder (or the nearest existing folder above it)."""
    folder = os.path.dirname(os.path.abspath(text))
    existing = folder
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    try:  # the real test (os.access says yes to root even where nothing can be created, as in /proc)
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: {error.strerror} in {existing}") from None
    return text


def _list_option(
    parser: argparse.ArgumentParser, flag: str, choices: tuple[str, ...] | dict, default: list[str], what: str,
    dest: str | None = None,
) -> None:  # fmt: skip
    """A comma-separated list option whose help names every choice and the default."""
    parser.add_argument(
        flag, dest=dest, type=_csv(choices), default=default, metavar=",".join(choices),
        help=f"{what}: one or more of {', '.join(choices)}, comma-separated (default: {','.join(default)})",
    )  # fmt: skip


def _installed_version(distribution: str) -> str:
    """A distribution's version without importing it (`--version` and `--help` stay quick)."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog="tritonconv", description=__doc__)
    versions = f"tritonconv {__version__} (triton {_installed_version('triton')}, torch {torch.__version__})"
    parser.add_argument("--version", action="version", version=versions)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("suites", help="list the shape suites shipped in autotune/")
    tune = commands.add_parser("tune", help="tune a suite's or a model's problems into this device's cache")
    source = tune.add_mutually_exclusive_group(required=True)
    source.add_argument("--suite", type=_suite, help="a suite name (see `tritonconv suites`) or a CSV path")
    source.add_argument(
        "--model",
        type=_factory,
        help="MODULE:FACTORY, a function of no arguments that returns the model, e.g. torchvision.models:resnet50",
    )
    tune.add_argument("--input-shape", type=_shape, help="the model's example input, N,C,H,W (with --model)")
    _list_option(tune, "--pass", PASSES, ["fwd"], "passes to tune; fwd alone by default, as inference runs "
                 "(bench times all three by default)", dest="passes")  # fmt: skip
    _list_option(tune, "--dtype", DTYPES, ["bfloat16"], "dtypes")
    _list_option(tune, "--layout", (CHANNELS_LAST, CONTIGUOUS), [CHANNELS_LAST], "memory formats")
    tune.add_argument("--batch", type=_positive, help="override every layer's (or the model input's) batch size")
    tune.add_argument("--force", action="store_true", help="retune problems the cache already holds")
    tune.add_argument(
        "--max-candidates",
        type=_positive,
        help="time at most this many configs per variant: the heuristic's and the cost model's best",
    )
    tune.add_argument(
        "--routes", choices=ROUTE_CHOICES, default=ALL_ROUTES,
        help="all: torch's own convolution competes and serves a layer-pass where it is faster (default); "
        "triton: Triton's kernels only (torch is still timed, for the verdict)",
    )  # fmt: skip
    tune.add_argument("--report", type=_report_csv, help="write the verdict (one row per layer and pass) as CSV")
    bench = commands.add_parser("bench", help="time a suite against torch; write OUT.csv, OUT.png and OUT.md")
    bench.add_argument(
        "--suite", type=_suite, required=True, help="a suite name (see `tritonconv suites`) or a CSV path"
    )
    _list_option(bench, "--pass", PASSES, list(PASSES), "passes to time; all three by default (tune tunes fwd "
                 "alone by default)", dest="passes")  # fmt: skip
    _list_option(bench, "--dtype", DTYPES, ["bfloat16"], "dtypes")
    _list_option(bench, "--layout", (CHANNELS_LAST, CONTIGUOUS), [CHANNELS_LAST], "memory formats")
    bench.add_argument("--batch", type=_positive, help="override every layer's batch size")
    _list_option(bench, "--baseline", BASELINES, ["torch"], "what to time against: torch (cuDNN in benchmark "
                 "mode) and optionally inductor (torch.compile, max-autotune)")  # fmt: skip
    bench.add_argument("--out", type=_out_csv, required=True, help="OUT.csv; OUT.png and OUT.md are written beside it")
    gate = commands.add_parser(
        "check-kernels",
        help="compile every kernel route for a GPU that need not be here; fail on spills, shared memory, no wgmma",
    )
    _list_option(gate, "--arch", tuple(ARCHES), ["sm90"], "the GPU architectures to compile for", dest="arches")
    _list_option(gate, "--suite", _suite_names(), list(GATE_SUITES), "suites", dest="suites")
    _list_option(gate, "--dtype", ("float16", "bfloat16"), ["bfloat16", "float16"], "dtypes")
    gate.add_argument("--space", action="store_true", help="also every candidate of each route's tuning space")
    gate.add_argument("--jobs", type=_positive, help="compiling processes (default: one per core)")
    gate.add_argument("--out", help="CSV, with one --arch (default: reports/static/<arch>_triton<version>.csv)")
    gate.add_argument(
        "--out-dir", help="folder for the reports, one <arch>_triton<version>.csv each (default: reports/static)"
    )
    compare = commands.add_parser(
        "compare", help="what got faster or slower between two bench CSVs; exits 1 if any row got slower"
    )
    compare.add_argument("old")
    compare.add_argument("new")
    compare.add_argument(
        "--noise", type=_non_negative, default=0.05, help="relative change treated as noise (default: 0.05)"
    )
    compare.add_argument(
        "--format", choices=COMPARE_FORMATS, default="text",
        help="text: an aligned table, md: a Markdown table (for a pull request), csv: for a script (default: text)",
    )  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 success, 2 a usage error (argparse's), 1 a failed run (one line on stderr;
    `--debug` shows the traceback)."""
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except BrokenPipeError:  # `tritonconv compare a b | head`: the reader left; nothing more to say
        with contextlib.suppress(AttributeError, OSError, ValueError):  # no flush error at exit either
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ValueError, OSError, RuntimeError, ImportError, KeyError) as error:
        if args.debug:
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"tritonconv {args.command}: error: {message}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    if args.command == "suites":
        from ..problem.suites import available_suites, load_suite

        for name in available_suites():
            layers = load_suite(name)
            print(f"{name}: {len(layers)} layers, {sum(layer.count for layer in layers)} convolutions")
        return 0
    if args.command in ("compare", "check-kernels", "bench"):
        require_reports("this command")
    if args.command == "compare":
        from .bench.compare import NOT_COMPARABLE, compare

        joined, text = compare(args.old, args.new, args.noise, args.format)
        print(text)
        if (joined["verdict"] == NOT_COMPARABLE).any():
            return 3
        return 1 if (joined["verdict"] == "slower").any() else 0
    if args.command == "check-kernels":
        rerun_compiled("tritonconv")
        return _check_kernels(args)
    if args.command == "bench":
        rerun_under_interpreter_without_gpu("tritonconv")
        return _bench(args)
    if args.model and not args.input_shape:
        build_parser().error("--model needs --input-shape N,C,H,W")
    rerun_under_interpreter_without_gpu("tritonconv")
    from ..models.verdict import verdict_of
    from ..tuning import distributed
    from ..tuning.session import device_cache, tune_problems
    from ..tuning.tuner import interpreted
    from .progress import Progress

    shard = distributed.shard_from_environment()
    try:
        lead = shard is None or shard.rank == 0
        calls = _calls(args)
        cache = device_cache()
        if interpreted() and lead:
            print(
                "no GPU: tuning through the Triton interpreter; its timings say nothing about kernels", file=sys.stderr
            )
        summary = tune_problems(
            [c.problem for c in calls if not c.transposed], args.passes, cache=cache, force=args.force,
            max_candidates=args.max_candidates, progress=Progress("tune") if lead else None, shard=shard,
            transposed=[c.problem for c in calls if c.transposed], routes=args.routes,
        )  # fmt: skip
    finally:
        distributed.leave()
    if lead:
        if shard is not None:
            print(f"ranks: {shard.world}, each tuned its share; every rank's cache holds all entries")
        verdict = verdict_of(calls, args.passes, cache, summary)
        if args.model:
            print(verdict.table())
        else:
            print(verdict.line())
        if args.report:
            print(f"wrote {verdict.write_csv(args.report)}")
        print(f"cache: {cache.path}")
        print(summary.line())
    return 0


def _check_kernels(args: argparse.Namespace) -> int:
    """The gate on each architecture in turn, one report each; exit 1 if any failed."""
    from pathlib import Path

    from . import kernel_gate

    if args.out and len(args.arches) > 1:
        raise ValueError("--out names one report: give one --arch with it")
    failed_any = False
    for arch in args.arches:
        started = time.monotonic()
        items = kernel_gate.gate_items(args.suites, [DTYPES[name] for name in args.dtype], args.space, arch)
        print(f"compiling {len(items)} routes x configs for {arch} ...", file=sys.stderr, flush=True)
        table = kernel_gate.check(items, arch, args.jobs)
        default = kernel_gate.default_report(arch)
        out = Path(args.out or (Path(args.out_dir) / default.name if args.out_dir else default))
        out.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(out, index=False)
        failed = kernel_gate.failures(table)
        for row in failed.to_dict("records"):
            print(f"FAIL {arch} {row['suite']} {row['layer']} {row['pass']} {row['dtype']} {row['variant']} "
                  f"{row['kernel']} [{row['config']}]: {row['verdict']}", file=sys.stderr)  # fmt: skip
        print(f"{arch}: {kernel_gate.summary(table)} ({time.monotonic() - started:.0f} s)")
        print(f"wrote {out}")
        failed_any = failed_any or len(failed) > 0
    return 1 if failed_any else 0


def _suite_names() -> tuple[str, ...]:
    from ..problem.suites import available_suites

    return tuple(available_suites())


def _bench(args: argparse.Namespace) -> int:
    """Measure every layer x pass x dtype x layout, write the report, print the summary; exit 1 if a
    result disagreed with torch beyond its dtype's tolerance."""
    from .bench import report
    from .bench.run import measure, on_gpu
    from .progress import Progress

    if on_gpu():
        torch.backends.cudnn.benchmark = True
    else:
        print("no GPU: kernels run in the Triton interpreter; its times are not GPU figures", file=sys.stderr)
    work = [(layer, pass_name) for layer in _suite_layers(args) for pass_name in args.passes]
    peaks = {DTYPES[dtype]: report.measure_peaks(DTYPES[dtype]) for dtype in args.dtype}
    baselines = list(dict.fromkeys(["torch", *args.baseline]))  # speedups are always against torch
    measurements = []
    progress = Progress("bench")
    for done, (layer, pass_name) in enumerate(work):
        progress(done, len(work), f"{pass_name} {layer.name} {str(layer.problem.dtype)[6:]} {layer.problem.layout}")
        measurements.append(measure(layer, pass_name, baselines))
    progress(len(work), len(work), "done")
    suite = args.suite if "." not in args.suite else os.path.splitext(os.path.basename(args.suite))[0]
    table = report.rows(suite, measurements, peaks)
    paths = report.write(table, peaks, args.out)
    print(paths[2].read_text())
    print("wrote " + ", ".join(str(path) for path in paths))
    return 0 if table["correct"].all() else 1


def _suite_layers(args: argparse.Namespace) -> list:
    """The suite's layers in every --dtype and --layout, with --batch applied."""
    from ..problem.suites import load_suite

    return [
        layer
        for dtype in args.dtype
        for layout in args.layout
        for layer in load_suite(args.suite, batch=args.batch, dtype=DTYPES[dtype], layout=layout)
    ]


def _calls(args: argparse.Namespace) -> list:
    """The convolutions to tune (`tune_model.RecordedConv`): a suite's layers, or the calls a model
    makes on a random input of `--input-shape`, for every --dtype and --layout."""
    from ..models.tune_model import RecordedConv, record_calls
    from ..tuning.tuner import interpreted

    if args.suite:
        return [RecordedConv(layer.name, layer.problem) for layer in _suite_layers(args)]

    try:
        model = args.model()
    except Exception as error:
        raise RuntimeError(f"--model {args.model.spec}: the factory raised {type(error).__name__}: {error}") from error
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"--model {args.model.spec} returned a {type(model).__name__}, not a torch.nn.Module: name a "
                         "function of no arguments that returns the model")  # fmt: skip
    shape = (args.batch, *args.input_shape[1:]) if args.batch else args.input_shape
    device = torch.device("cpu" if interpreted() else "cuda")
    calls = []
    for dtype in args.dtype:
        for layout in args.layout:
            memory_format = (
                torch.channels_last if layout == CHANNELS_LAST and len(shape) == 4 else torch.contiguous_format
            )
            model = model.to(device=device, dtype=DTYPES[dtype], memory_format=memory_format)
            example = torch.randn(shape, device=device, dtype=DTYPES[dtype]).to(memory_format=memory_format)
            try:
                calls += record_calls(model, example)
            except Exception as error:  # the model's own error (wrong channel count, ...), with what was run
                raise RuntimeError(
                    f"--model {args.model.spec} on a {dtype} {layout} input of shape {tuple(shape)}: "
                    f"{type(error).__name__}: {error}"
                ) from error
    return calls


def _factory(spec: str) -> Callable:
    """An argparse type for --model: MODULE:FACTORY, imported as `python -m` would (the working
    directory is on the path) and checked to be callable before any work starts."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise argparse.ArgumentTypeError(f"expected MODULE:FACTORY, e.g. torchvision.models:resnet50; got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        factory = importlib.import_module(module_name)
    except ImportError as error:
        raise argparse.ArgumentTypeError(f"cannot import {module_name!r} ({error})") from None
    for name in attribute.split("."):
        if not hasattr(factory, name):
            raise argparse.ArgumentTypeError(f"{module_name!r} has no {attribute!r}") from None
        factory = getattr(factory, name)
    if not callable(factory):
        raise argparse.ArgumentTypeError(f"{spec!r} is not callable: expected a function that returns the model")
    return _NamedFactory(spec, factory)


class _NamedFactory:
    """A model factory that remembers how it was named, for error messages."""

    def __init__(self, spec: str, factory: Callable):
        self.spec, self.factory = spec, factory

    def __call__(self):
        return self.factory()


if __name__ == "__main__":
    sys.exit(main())
