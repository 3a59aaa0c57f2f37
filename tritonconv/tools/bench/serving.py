"""The causal conv1d as an inference engine runs it, timed: decode steps and packed prefills of a
serving suite (`autotune/serving/ssm.csv`), one row per (case, provider), in one process on the same
tensors:
- `tritonconv`: `causal_conv1d_update` (one launch for the batch) or `causal_conv1d_varlen` (one
  launch for all prompts);
- `torch`: what a model without a kernel library runs, as the reference implementations of the
  causal-conv1d package and vLLM write it: decode gathers the batch's state lines, concatenates the
  new tokens, runs F.conv1d, SiLU and scatters the new states back; the prefill does the same once per
  prompt (lengths read on the host before timing, as those references do);
- `causal-conv1d` where the package is installed: its `causal_conv1d_update` for decode; for a
  prefill its `causal_conv1d_fn` with `seq_idx`, which computes the outputs but neither reads nor
  writes a state cache (the row says so).
Each provider's output is checked against torch's (and its state cache, for tritonconv, must equal
torch's exactly) before anything is timed. On a GPU times are do_bench medians and CUDA-graph
replays; without one the kernels run in Triton's interpreter and the times say nothing about GPUs.

Usage: python -m tritonconv.tools.bench.serving [--suite ssm] [--channels N] [--dtype bfloat16] [--out CSV]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable

import pandas as pd
import torch
import torch.nn.functional as F

import tritonconv

from ...problem.runtime import rerun_under_interpreter_without_gpu
from ...problem.serving import ServingCase, ServingTensors, load_serving_suite, serving_tensors
from .timing import relative_error, stamp

TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
PACKAGE = "causal-conv1d"
Call = Callable[[], torch.Tensor]


def tritonconv_call(case: ServingCase, t: ServingTensors) -> Call:
    if case.kind == "decode":
        return lambda: tritonconv.causal_conv1d_update(t.x, t.states, t.weight, t.bias, "silu",
                                                       conv_state_indices=t.indices)  # fmt: skip
    return lambda: tritonconv.causal_conv1d_varlen(t.x, t.weight, t.bias, "silu", query_start_loc=t.starts,
                                                   conv_states=t.states, cache_indices=t.indices,
                                                   has_initial_state=t.has_state)  # fmt: skip


def torch_call(case: ServingCase, t: ServingTensors) -> Call:
    """The reference implementations' torch operations (module docstring)."""
    channels, slots, dtype = case.channels, t.states.shape[-1], t.states.dtype
    kernel = t.weight[:, None, :]
    lines = t.indices.long()
    if case.kind == "decode":

        def decode() -> torch.Tensor:
            window = torch.cat([t.states[lines].to(t.weight.dtype), t.x.to(t.weight.dtype)], dim=-1)
            out = F.conv1d(window, kernel, t.bias, groups=channels)
            t.states[lines] = window[..., -slots:].to(dtype)
            return F.silu(out).to(t.x.dtype)

        return decode
    bounds = t.starts.tolist()
    flags = t.has_state.tolist()
    line_list = lines.tolist()

    def prefill() -> torch.Tensor:
        outputs = []
        for i, line in enumerate(line_list):
            history = t.states[line] if flags[i] else t.states.new_zeros(channels, slots)
            window = torch.cat([history.to(t.weight.dtype), t.x[:, bounds[i] : bounds[i + 1]].to(t.weight.dtype)], -1)
            outputs.append(F.conv1d(window[None], kernel, t.bias, groups=channels)[0])
            t.states[line] = window[..., -slots:].to(dtype)
        return F.silu(torch.cat(outputs, dim=-1)).to(t.x.dtype)

    return prefill


def package_call(case: ServingCase, t: ServingTensors) -> Call | None:
    """The causal-conv1d package's call, or None where it is not installed."""
    try:
        import causal_conv1d
    except ImportError:
        return None
    if case.kind == "decode":
        return lambda: causal_conv1d.causal_conv1d_update(t.x, t.states, t.weight, t.bias, "silu",
                                                          conv_state_indices=t.indices)  # fmt: skip
    lengths = t.starts.diff()
    seq_idx = torch.repeat_interleave(torch.arange(case.batch, device=t.x.device), lengths)[None].to(torch.int32)
    return lambda: causal_conv1d.causal_conv1d_fn(t.x[None], t.weight, t.bias, seq_idx=seq_idx, activation="silu")[0]


def case_rows(
    case: ServingCase, device: str, dtype: torch.dtype, eager: Callable[[Call], float], graph: Callable[[Call], float]
) -> list[dict]:
    """One row per provider: checked against torch on copies of the same state cache, then timed."""
    tensors = serving_tensors(case, device, dtype)
    calls = {"tritonconv": tritonconv_call, "torch": torch_call, PACKAGE: package_call}
    reference_tensors = dataclasses.replace(tensors, states=tensors.states.clone())
    expected = torch_call(case, reference_tensors)()
    rows = []
    for provider, make in calls.items():
        own = dataclasses.replace(tensors, states=tensors.states.clone())
        call = make(case, own)
        if call is None:
            continue
        note = "outputs only: no state cache" if provider == PACKAGE and case.kind == "prefill" else ""
        try:
            error = relative_error(call(), expected)
            outputs_only = provider == PACKAGE and case.kind == "prefill"
            states_equal = outputs_only or torch.equal(own.states, reference_tensors.states)
            correct = error <= TOLERANCE[dtype] and states_equal
            ms, graph_ms = (eager(call), graph(call)) if correct else (math.nan, math.nan)
        except Exception as failure:  # a provider that cannot run this case: the row says why
            error, correct, ms, graph_ms = math.nan, False, math.nan, math.nan
            note = f"{type(failure).__name__}: {' '.join(str(failure).split())[:200]}"
        rows.append({"layer": case.name, "kind": case.kind, "batch": case.batch, "channels": case.channels,
                     "width": case.width, "tokens": case.tokens, "dtype": str(dtype).removeprefix("torch."),
                     "provider": provider, "ms": ms, "graph_ms": graph_ms, "max_rel_err": error, "correct": correct,
                     "note": note})  # fmt: skip
        print(f"{case.name:>28s} {provider:>14s} {ms:9.4f} ms  graph {graph_ms:9.4f} ms  err {error:.2e}", flush=True)
    return rows


def bench_serving(
    cases: list[ServingCase], device: str, dtype: torch.dtype, eager: Callable[[Call], float],
    graph: Callable[[Call], float], device_name: str,
) -> pd.DataFrame:  # fmt: skip
    """Every case's rows, stamped with the device and versions, with each provider's time over tritonconv's."""
    table = pd.DataFrame([row for case in cases for row in case_rows(case, device, dtype, eager, graph)])
    ours = table[table["provider"] == "tritonconv"].set_index("layer")["ms"]
    table["over_tritonconv"] = table["ms"] / table["layer"].map(ours)
    return stamp(table, device_name)


def launchers(cases: list[ServingCase], device: str, dtype: torch.dtype) -> list[Call]:
    """tritonconv's call of every case (for capturing and compiling their launches ahead of timing)."""
    return [tritonconv_call(case, serving_tensors(case, device, dtype)) for case in cases]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="ssm", help="a serving suite's name or CSV path")
    parser.add_argument("--channels", type=int, help="every case's D (small for a CPU run through the interpreter)")
    parser.add_argument("--dtype", default="bfloat16", choices=("float16", "bfloat16", "float32"))
    parser.add_argument("--out", default="serving.csv")
    args = parser.parse_args()
    rerun_under_interpreter_without_gpu("tritonconv.tools.bench.serving")
    from .timing import cpu_median_ms, graph_ms, median_ms

    on_gpu = torch.cuda.is_available()
    cases = load_serving_suite(args.suite)
    if args.channels:
        cases = [dataclasses.replace(case, channels=args.channels) for case in cases]
    if on_gpu:
        torch.backends.cudnn.benchmark = True
        table = bench_serving(cases, "cuda", getattr(torch, args.dtype), median_ms, graph_ms,
                              torch.cuda.get_device_name())  # fmt: skip
    else:
        table = bench_serving(cases, "cpu", getattr(torch, args.dtype), cpu_median_ms, lambda call: math.nan,
                              "cpu (Triton interpreter: times are not GPU figures)")  # fmt: skip
    table.to_csv(args.out, index=False)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
