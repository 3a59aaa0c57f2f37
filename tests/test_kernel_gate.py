"""The compile-only gate on its four architectures: it covers every registered route, fails a config
that spills or needs too much shared memory (LDS), and the tuner drops such a candidate before timing
it; each arch's heuristics compile clean where another's did not."""

import json
import os
import subprocess
import sys
import textwrap

import torch

import tritonconv
from tritonconv.problem import runtime
from tritonconv.problem.devices import ARCHES
from tritonconv.routes import registry
from tritonconv.tools import kernel_gate
from tritonconv.tuning import tuner

# Runs in a process without TRITON_INTERPRET (interpreted kernels do not compile for a GPU).
PLANTED = textwrap.dedent(
    """
    import dataclasses, json, torch
    from tritonconv.tools import kernel_gate
    from tritonconv.ops import static_compile
    from tritonconv.problem.arithmetic import make_problem
    from tritonconv.problem.config import KernelConfig
    from tritonconv.problem.devices import ARCHES
    from tritonconv.routes.registry import spec
    from tritonconv.tuning import tuner

    problem = make_problem(n=4, c=64, h=16, w=16, k=256, r=3, s=3, padding=1, dtype=torch.bfloat16,
                           layout="channels_last")
    chosen = spec("fwd", "implicit_gemm").heuristic(problem)
    planted = {
        "heuristic": chosen,
        "spilling": KernelConfig(block_m=256, block_n=128, block_k=64, num_warps=4, num_stages=2),
        "oversized": KernelConfig(block_m=128, block_n=256, block_k=128, num_warps=8, num_stages=4),
    }
    items = [kernel_gate.GateItem("planted", name, problem, "fwd", "implicit_gemm", config, "heuristic")
             for name, config in planted.items()]
    table = kernel_gate.check(items, jobs=1)
    verdicts = dict(zip(table["layer"], table["verdict"]))
    with static_compile.compiling_for("sm90"):
        workload = tuner.make_workload(problem, "fwd", torch.device("cpu"))
        dropped = {name: tuner.static_reason(workload, "implicit_gemm", config, ARCHES["sm90"])
                   for name, config in planted.items()}
    print(json.dumps({"verdicts": verdicts, "failures": len(kernel_gate.failures(table)), "dropped": dropped}))
    """
)


def run_compiled(script: str) -> dict:
    """The JSON `script` prints last, run in a process without TRITON_INTERPRET (interpreted kernels
    do not compile for a GPU)."""
    env = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_gate_fails_a_planted_spilling_or_oversized_config_and_the_tuner_drops_them():
    found = run_compiled(PLANTED)
    verdicts, dropped = found["verdicts"], found["dropped"]
    assert verdicts["heuristic"] == "ok", verdicts
    assert "spills" in verdicts["spilling"], verdicts
    assert "shared memory" in verdicts["oversized"], verdicts
    assert found["failures"] == 2
    assert dropped["heuristic"] is None
    assert "spills" in dropped["spilling"] and "shared memory" in dropped["oversized"], dropped


# A config that fits Hopper's 227 KiB of shared memory per block but not MI300X's 64 KiB of LDS.
PLANTED_LDS = textwrap.dedent(
    """
    import json, torch
    from tritonconv.tools import kernel_gate
    from tritonconv.ops import static_compile
    from tritonconv.problem.arithmetic import make_problem
    from tritonconv.problem.config import KernelConfig
    from tritonconv.problem.devices import ARCHES
    from tritonconv.tuning import tuner

    problem = make_problem(n=4, c=64, h=16, w=16, k=256, r=3, s=3, padding=1, dtype=torch.bfloat16,
                           layout="channels_last")
    config = KernelConfig(block_m=128, block_n=128, block_k=128, num_warps=8, num_stages=3)
    item = kernel_gate.GateItem("planted", "lds", problem, "fwd", "implicit_gemm", config, "heuristic")
    found = {}
    for arch in ("sm90", "gfx942"):
        table = kernel_gate.check([item], arch, jobs=1)
        with static_compile.compiling_for(arch):
            workload = tuner.make_workload(problem, "fwd", torch.device("cpu"))
            dropped = tuner.static_reason(workload, "implicit_gemm", config, ARCHES[arch])
        found[arch] = {"shared": int(table["shared_bytes"][0]), "verdict": table["verdict"][0],
                       "failures": len(kernel_gate.failures(table)), "dropped": dropped}
    print(json.dumps(found))
    """
)


def test_a_config_that_fits_hopper_but_not_mi300x_lds_is_rejected_on_gfx942_only():
    found = run_compiled(PLANTED_LDS)
    hopper, mi300x = found["sm90"], found["gfx942"]
    assert 64 * 1024 < hopper["shared"] <= 227 * 1024, hopper
    assert hopper["verdict"] == "ok" and hopper["failures"] == 0 and hopper["dropped"] is None, hopper
    assert mi300x["shared"] > 64 * 1024, mi300x
    assert f"LDS {mi300x['shared']} > 65536" in mi300x["verdict"] and mi300x["failures"] == 1, mi300x
    assert "LDS" in mi300x["dropped"], mi300x


# The layers whose sm_100 heuristic configs spilled before Blackwell had rules of its own
# (`problem/config._for_tensor_memory`): under Triton 3.9, the TMA weight gradient with its bias
# gradient at 8 warps and the 3-D forward at block_k 32; under 3.6, the 3-D input and weight
# gradients; under both, ResNet-50's 1x1 weight gradient at 4 warps.
BLACKWELL_LAYERS = textwrap.dedent(
    """
    import json, torch
    from tritonconv.tools import kernel_gate

    wanted = {("resnet50", "l2.b1.c1 1x1", "wgrad + bias grad", "tma"),
              ("resnet50", "l1.c3/ds 1x1", "wgrad", "implicit_gemm"),
              ("video", "r2p1d.l3.b1.c1.t 460->256 s2x1x1", "fwd", "implicit_gemm_3d"),
              ("video", "r2p1d.l3.b1.c2.s 256->460", "dgrad", "implicit_gemm_3d"),
              ("video", "r2p1d.l2.b1.c1.s 64->230 s1x2x2", "wgrad", "implicit_gemm_3d")}
    items = [item for item in kernel_gate.gate_items(("resnet50", "video"), (torch.bfloat16,), arch="sm100")
             if (item.suite, item.layer, item.pass_name, item.variant) in wanted]
    table = kernel_gate.check(items, "sm100", jobs=1)
    print(json.dumps({"items": len(items), "rows": table[["layer", "kernel", "spill_bytes", "tcgen05", "verdict"]]
                      .astype(str).to_dict("records")}))
    """
)


def test_blackwell_heuristics_compile_without_spills_where_hopper_s_spilled():
    found = run_compiled(BLACKWELL_LAYERS)
    assert found["items"] == 5, found
    gemm_rows = [row for row in found["rows"] if row["kernel"] != "_sum_splits_kernel"]
    assert len(gemm_rows) == 5 and all(row["tcgen05"] == "True" for row in gemm_rows), found
    assert {row["verdict"] for row in found["rows"]} == {"ok"}, found


def _gradient_and_forward_routes(items) -> set[tuple]:
    return {(item.layer, item.pass_name, item.variant) for item in items if item.pass_name in ("fwd", "dgrad", "wgrad")}


def test_every_route_is_compiled_or_declared_unavailable_on_every_arch():
    """Each arch's gate holds every (layer, pass, route) the registry has for the suite: prepared
    and compiled where the arch offers the route, a row that says why not where it does not (the
    TMA routes on AMD), never dropped."""
    everywhere = _gradient_and_forward_routes(kernel_gate.gate_items(("smoke",), (torch.bfloat16,)))
    for arch in ARCHES.values():
        items = kernel_gate.gate_items(("smoke",), (torch.bfloat16,), arch=arch.name)
        assert _gradient_and_forward_routes(items) == everywhere, arch.name
        unavailable = [item for item in items if item.source == kernel_gate.UNAVAILABLE]
        assert {item.variant for item in unavailable} == (set() if arch.tma else {registry.Variant.TMA}), arch.name
        with runtime.target_arch(arch):
            verdicts = {row["verdict"] for item in unavailable for row in kernel_gate.compile_item(item)}
        assert verdicts == (set() if arch.tma else {f"unavailable on {arch.name}: no TMA"}), verdicts


def test_the_gate_compiles_every_registered_route():
    """The smoke suite (2-D) and the video suite (3-D) reach every (pass, variant) of the registry,
    and the bias gradient."""
    items = kernel_gate.gate_items(("smoke", "video"), (torch.bfloat16,))
    covered = {(item.pass_name, item.variant) for item in items}
    kernel_routes = {spec.key for spec in registry.kernel_specs()}  # torch's own route compiles nothing here
    assert kernel_routes <= covered and not any(variant == registry.Variant.TORCH for _, variant in covered), (
        kernel_routes - covered
    )
    assert (kernel_gate.BIAS_GRAD, "reduction") in covered
    assert all(item.source == "heuristic" for item in items)
    assert len(kernel_gate.gate_items(("smoke",), (torch.bfloat16,), space=True)) > len(items)


DOT_KERNELS = {
    "_conv2d_fwd_implicit_gemm_kernel", "_conv2d_fwd_1x1_kernel", "_conv2d_fwd_grouped_tile_kernel",
    "_conv2d_fwd_tma_kernel", "_conv2d_wgrad_tma_kernel", "_conv2d_dgrad_kernel", "_conv2d_dgrad_phased_kernel",
    "_conv2d_wgrad_partial_kernel", "_conv3d_fwd_kernel", "_conv3d_dgrad_kernel", "_conv3d_wgrad_partial_kernel",
}  # fmt: skip


def test_the_gate_knows_which_kernels_multiply_tiles():
    """The wgmma rule applies to the kernels that multiply tiles, through `tl.dot` or the shared
    `dot_accumulate`: a kernel it stopped seeing would never be held to it."""
    found = {name for name in tritonconv.kernels.__all__ if kernel_gate._has_dot(getattr(tritonconv.kernels, name))}
    assert found == DOT_KERNELS


def test_a_2d_dot_kernel_at_a_wgmma_tile_must_issue_wgmma():
    kernel = tritonconv.kernels._conv2d_fwd_implicit_gemm_kernel
    without = kernel_gate.static_compile.StaticUsage(128, 0, 1024, wgmma=False, mma_sync=True, tma=False)
    assert kernel_gate.verdict(kernel, {"BLOCK_M": 128, "num_warps": 4}, without) == "tl.dot without wgmma"
    assert kernel_gate.verdict(kernel, {"BLOCK_M": 32, "num_warps": 4}, without) == "ok"  # too few rows for wgmma
    grouped = tritonconv.kernels._conv2d_fwd_grouped_tile_kernel  # a 3-D dot: mma.sync by design
    assert kernel_gate.verdict(grouped, {"BLOCK_M": 128, "num_warps": 4}, without) == "ok"


def test_the_tuner_never_times_a_statically_unfit_candidate(monkeypatch):
    problem = tritonconv.make_problem(n=1, c=4, h=5, w=5, k=8, r=3, s=3, padding=1)
    timed = []
    unfit = {}

    def static_reason(workload, variant, config, shared_memory, numbers=None):
        if not unfit:
            unfit[config] = "statically unfit (k): spills 8 bytes"
        return unfit.get(config)

    monkeypatch.setattr(tuner, "static_reason", static_reason)
    entry = tuner.tune_problem(problem, "fwd", timer=lambda fn: timed.append(fn()) or [1.0], max_candidates=3)
    assert [failure["reason"] for failure in entry["failed"]] == list(unfit.values())
    assert len(timed) == (entry["candidates"] - 1) + 1  # every fit candidate, and torch's own kernel
    assert entry["config"] != next(iter(unfit)).as_dict()
