"""Tuning a suite in the quick run: every layer's fwd, dgrad and wgrad over the pruned candidates.

Each (layer, pass) times at most the cost model's `top_k` plus the heuristic's and the TMA route's
configs (`tuning.prune`), then torch's own kernel on the same tensors, each checked against torch
first, and its winner (torch's kernel where it is faster beyond the noise) goes into the shipped
table as soon as it is chosen. Every candidate becomes a row of `quick_candidates_<suite>.csv`: why
it was picked, the model's estimate and rank, its compiled registers, spills and shared memory, its
programs and waves over the SMs, its median time: the cost model's next validation set. A
(layer, pass) the table already holds under the current code is not tuned again (its row says
`cached`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from ....problem.arithmetic import ConvProblem
from ....problem.suites import load_suite
from ....routes.registry import Pass
from ....tuning.cache import problem_key
from ....tuning.prune import pruned
from ....tuning.session import cached_entry, tune_problems
from ....tuning.tuner import make_workload, tf32_key
from .context import QuickRun


def work(run: QuickRun, suite: str) -> list[tuple[str, ConvProblem, str, str]]:
    """(key, problem, pass, layer names) of every distinct problem-pass of the suite, in order."""
    names: dict[tuple[ConvProblem, str], list[str]] = {}
    for layer in load_suite(suite, batch=run.batch, dtype=run.dtype, layout=run.layout):
        for pass_name in Pass:
            names.setdefault((layer.problem, str(pass_name)), []).append(layer.name)
    return [(problem_key(problem, pass_name, tf32_key()), problem, pass_name, "; ".join(layers))
            for (problem, pass_name), layers in names.items()]  # fmt: skip


def candidate_count(run: QuickRun, suite: str) -> list[int]:
    """How many candidates each (layer, pass) would time, torch's own kernel included: the dry run's count."""
    return [len(pruned(problem, pass_name, run.top_k)) + 1 for _, problem, pass_name, _ in
            work(run, suite)]  # fmt: skip


def launchers(run: QuickRun, suite: str) -> list[Callable[[], object]]:
    """Every candidate's call of every (layer, pass) still to tune, for capturing their launches."""
    table = run.cache()
    calls = []
    for _, problem, pass_name, _ in work(run, suite):
        if cached_entry(table, problem, pass_name) is not None:
            continue
        workload = make_workload(problem, pass_name, run.torch_device, answer=False)
        for candidate in pruned(problem, pass_name, run.top_k):
            calls.append(lambda w=workload, c=candidate: w.run(c.variant, c.config))
    return calls


def tune_suite(run: QuickRun, suite: str, stage: str) -> pd.DataFrame:
    """Tune the suite into the table, then write its per-candidate CSV; resumes from the journal."""
    journal = run.journal(stage)
    done = journal.keys()
    table = run.cache()
    for key, problem, pass_name, layers in work(run, suite):
        if key in done:
            continue
        entry = cached_entry(table, problem, pass_name)
        if entry is not None:
            journal.add([{"key": key, "layers": layers, "pass": pass_name, "variant": entry.get("variant"),
                          "status": "cached", "median_ms": entry.get("median_ms"), "chosen": True,
                          **(entry.get("config") or {})}])  # fmt: skip
            continue
        run.check_time(f"tuning {key}")
        records: list[dict] = []
        tune_problems([problem], [pass_name], cache=table, timer=run.timers.samples, top_k=run.top_k,
                      records=records)  # fmt: skip
        winner = cached_entry(table, problem, pass_name) or {}
        for record in records:
            config = {name: record.get(name) for name in (winner.get("config") or {})}
            record["chosen"] = bool(winner.get("config")) and record["variant"] == winner.get("variant") and (
                config == winner["config"])  # fmt: skip
        journal.add([{"layers": layers, **record} for record in records])
        print(f"  tuned {key}: {len(records)} candidates, {winner.get('variant')} {winner.get('config')}", flush=True)
    rows = pd.DataFrame(journal.rows()).assign(suite=Path(suite).stem, device=run.device)
    rows.to_csv(run.reports / f"quick_candidates_{Path(suite).stem}.csv", index=False)
    journal.close()
    return rows
