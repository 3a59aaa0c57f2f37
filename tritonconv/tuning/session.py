"""Tune a list of problems against the cache: skip what is cached, time the rest, store as it goes."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..problem import suites
from ..problem.arithmetic import ConvProblem
from ..routes.registry import TRANSPOSED_PASSES, Pass, tuned_variants
from .cache import TuningCache, cache_dir, problem_key
from .distributed import Shard
from .fingerprint import device_slug, problem_fingerprint
from .nearest import nearest_entry
from .tuner import ALL_ROUTES, TRITON_ROUTES, Timer, decide, redecidable, tf32_key, tune_problem


@dataclass
class TuneSummary:
    """What a tuning run did, over every rank when sharded: `tuned` (problem-passes timed now),
    `cached` (already in the cache), `failed` (no working config); `problems`, the distinct
    problems it covered."""

    tuned: int = 0
    cached: int = 0
    failed: int = 0
    problems: list[ConvProblem] = field(default_factory=list)

    def line(self) -> str:
        return f"tuned: {self.tuned}, from cache: {self.cached}, failed: {self.failed}"


def device_cache(directory: str | Path | None = None) -> TuningCache:
    """This device's cache file under `directory` (default: `cache_dir()`), one object per file so
    its parsed entries are shared."""
    return cache_at(Path(directory or cache_dir()) / f"{device_slug()}.json")


@functools.cache
def cache_at(path: Path) -> TuningCache:
    """The one `TuningCache` object of the file at `path` in this process."""
    return TuningCache(path)


def cached_entry(cache: TuningCache, problem: ConvProblem, pass_name: str) -> dict | None:
    """The cached entry for (problem, pass) if it was tuned under the current code and space."""
    fingerprint = problem_fingerprint(pass_name, tuned_variants(problem, pass_name))
    return cache.lookup(problem_key(problem, pass_name, tf32_key()), fingerprint)


def entry_routes(entry: dict) -> str:
    """What an entry was chosen from: 'all' (torch's convolution timed too) or 'triton' (written by a
    run that kept torch out, or by a version that never timed it)."""
    return entry.get("routes", TRITON_ROUTES)


def shipped_table() -> TuningCache | None:
    """The table shipped for this device in `autotune/` (installed as `tritonconv.autotune`), if any."""
    path = suites.suites_folder() / f"{device_slug()}.json"
    return cache_at(path) if path.exists() else None


def find_entry(problem: ConvProblem, pass_name: str, *, borrow: bool = True) -> tuple[dict, str] | None:
    """(entry, where it came from) for a problem: this device's cache, then the shipped table, then
    (with `borrow`) the nearest tuned shape of the same class in either. Only entries tuned under
    the current code and space count, and only ones with a working config."""
    sources = [(device_cache(), "tuned cache"), (shipped_table(), "shipped table")]
    sources = [(cache, name) for cache, name in sources if cache is not None]
    for cache, name in sources:
        entry = cached_entry(cache, problem, pass_name)
        if entry is not None and entry["config"] is not None:
            return entry, name
    if not borrow:
        return None
    fingerprint = problem_fingerprint(pass_name, tuned_variants(problem, pass_name))
    current = [
        (key, entry)
        for cache, _ in sources
        for key, entry in cache.entries().items()
        if entry.get("fingerprint") == fingerprint
    ]
    suffix = problem_key(problem, pass_name, tf32_key()).rsplit(" ", 1)[1]
    found = nearest_entry(problem, pass_name, suffix, current)
    if found is None:
        return None
    key, entry = found
    return dict(entry), f"nearest tuned shape: {key}"


def tune_problems(
    problems: Iterable[ConvProblem],
    passes: Iterable[str],
    *,
    cache: TuningCache | None = None,
    force: bool = False,
    timer: Timer | None = None,
    max_candidates: int | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    shard: Shard | None = None,
    transposed: Iterable[ConvProblem] = (),
    top_k: int | None = None,
    records: list[dict] | None = None,
    routes: str = ALL_ROUTES,
) -> TuneSummary:
    """Tune every (problem, pass) not already cached (all of them with `force`), writing each entry
    as soon as it is tuned so an interrupted run keeps what it finished. `transposed` holds the
    underlying convolutions of transposed ones, whose passes are tuned as the ones that serve them
    (`registry.TRANSPOSED_PASSES`: a transposed forward is its convolution's dgrad).

    With a `shard` (see `tuning.distributed`), this process takes only its share of the work, then
    every rank's entries, new and cached, are stored into this process's cache too, and the summary
    counts every rank's work. `progress` sees this process's share. `top_k` times only the pruned
    candidates (`tuner.tune_problem`); `records` receives one row per candidate timed here, with
    the problem's cache key. `routes` ('all' or 'triton') says whether torch's own convolution
    competes (`tuner.tune_problem`); a cached entry counts only if it was tuned with the same
    choice (an entry written before torch was timed is a Triton-only one: served as it is, but
    tuned again when torch competes).
    """
    cache = cache or device_cache()
    distinct = list(dict.fromkeys(problems))
    passes = list(passes)
    work = [(problem, pass_name) for problem in distinct for pass_name in passes]
    transposed = list(dict.fromkeys(transposed))
    served = [(problem, TRANSPOSED_PASSES[Pass(pass_name)]) for problem in transposed for pass_name in passes]
    work = list(dict.fromkeys(work + served))
    mine = shard.take(work) if shard else work
    outcomes = []  # (outcome, key, entry): outcome is 'tuned', 'cached' or 'failed'
    for done, (problem, pass_name) in enumerate(mine):
        key = problem_key(problem, pass_name, tf32_key())
        if progress:
            progress(done, len(mine), key)
        entry = None if force else cached_entry(cache, problem, pass_name)
        if entry is not None and entry_routes(entry) != routes and redecidable(entry):
            entry = decide(entry, routes)  # both routes' times are in it: choose again, time nothing
            cache.store({key: entry})
        if entry is not None and entry_routes(entry) == routes:
            outcomes.append(("cached", key, entry))
            continue
        rows: list[dict] = []
        entry = tune_problem(problem, pass_name, timer=timer, max_candidates=max_candidates, top_k=top_k, records=rows,
                             routes=routes)  # fmt: skip
        if records is not None:
            records.extend({"key": key, **row} for row in rows)
        cache.store({key: entry})
        outcomes.append(("failed" if entry["config"] is None else "tuned", key, entry))
    if progress:
        progress(len(mine), len(mine), "done")
    if shard:
        every_rank = shard.gather(outcomes)
        _store_by_device(cache, [item for rank, items in enumerate(every_rank) if rank != shard.rank for item in items])
        outcomes = [item for items in every_rank for item in items]
    counts = Counter(outcome for outcome, _, _ in outcomes)  # stores bumped the cache generation: no stale plan
    return TuneSummary(counts["tuned"], counts["cached"], counts["failed"], list(dict.fromkeys(distinct + transposed)))


def _store_by_device(cache: TuningCache, outcomes: list[tuple[str, str, dict]]) -> None:
    """Store other ranks' entries beside `cache`, each in the file of the device it was tuned on (so
    ranks on different GPUs each fill their own device's file)."""
    by_device: dict[str, dict[str, dict]] = {}
    for _, key, entry in outcomes:
        by_device.setdefault(entry.get("device", device_slug()), {})[key] = entry
    for slug, entries in by_device.items():
        path = cache.path.with_name(f"{slug}.json")
        (cache if path == cache.path else cache_at(path)).store(entries)
