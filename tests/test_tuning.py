"""The autotuner's parts on their own: config spaces and pruning, the noise-aware choice, the disk cache."""

import dataclasses
import functools
import json
import os
import subprocess
import sys
import warnings

import pytest
import torch
import triton
from conv_reference import needs_runtime_loops, recording_launcher

import tritonconv
from tritonconv.problem import runtime
from tritonconv.problem.config import KernelConfig, wgrad_config
from tritonconv.problem.devices import ARCHES
from tritonconv.problem.suites import load_suite
from tritonconv.routes.registry import REGISTRY, Variant
from tritonconv.tuning import cache as tuning_cache
from tritonconv.tuning.cache import TuningCache, cache_dir, problem_key
from tritonconv.tuning.fingerprint import fingerprint, kernel_digest
from tritonconv.tuning.select import choose
from tritonconv.tuning.space import SPACES, candidates, shared_memory_bytes

PROBLEMS = {
    "resnet 3x3": tritonconv.make_problem(n=32, c=64, h=56, w=56, k=64, r=3, s=3, padding=1, dtype=torch.bfloat16),
    "tiny": tritonconv.make_problem(n=1, c=3, h=5, w=6, k=4, r=3, s=3),
    "grouped": tritonconv.make_problem(n=2, c=32, h=8, w=8, k=32, r=3, s=3, padding=1, groups=4),
    "depthwise": tritonconv.make_problem(n=2, c=16, h=9, w=9, k=16, r=7, s=7, padding=3, groups=16),
    "sequence": tritonconv.make_problem(n=2, c=24, h=1, w=50, k=24, r=1, s=4, padding=(0, 3), groups=24),
}


@pytest.mark.parametrize("space", list(SPACES), ids="/".join)
@pytest.mark.parametrize("name", list(PROBLEMS))
def test_candidates_fit_the_problem_and_the_shared_memory(space, name):
    problem = PROBLEMS[name]
    pass_name, variant = space
    configs = candidates(problem, pass_name, variant)
    assert configs, "pruning left nothing to time"
    assert len(set(configs)) == len(configs), "duplicates survive pruning"
    assert configs == candidates(problem, pass_name, variant), "the order is not fixed"
    sides = {"fwd": (problem.gemm_m, problem.k_per_group), "dgrad": (problem.n * problem.h * problem.w, problem.c)}
    for config in configs:
        assert shared_memory_bytes(config, problem.element_size, variant) <= 227 * 1024
        if pass_name in sides and variant not in ("depthwise", "depthwise_3d", "depthwise_1d"):  # columns by channels
            m, n = sides[pass_name]
            assert config.block_m <= max(16, triton.next_power_of_2(m)), config
            assert config.block_n <= max(16, triton.next_power_of_2(n)), config


def test_shared_memory_limit_prunes_by_the_arch_s_own_buffers():
    """MI300X's 64 KiB of LDS prunes the space, counting the copies its pipeline keeps (one stage waits
    in VGPRs there): 128x64x64 bf16 tiles at 3 stages take 48 KiB on gfx942, 72 KiB on MI355X and
    Hopper, which buffer every stage."""
    problem = PROBLEMS["resnet 3x3"]
    mi300x, mi355x, hopper = ARCHES["gfx942"], ARCHES["gfx950"], ARCHES["sm90"]
    everything = candidates(problem, "fwd", "implicit_gemm", hopper)
    small = candidates(problem, "fwd", "implicit_gemm", mi300x)
    assert 0 < len(small) < len(everything)
    assert all(shared_memory_bytes(c, 2, "implicit_gemm", mi300x) <= 64 * 1024 for c in small)
    tile = KernelConfig(block_m=128, block_n=64, block_k=64, num_warps=4, num_stages=3)
    sizes = {arch.name: shared_memory_bytes(tile, 2, "implicit_gemm", arch) for arch in (mi300x, mi355x, hopper)}
    assert sizes == {"gfx942": 48 * 1024, "gfx950": 72 * 1024, "sm90": 72 * 1024}
    assert tile in small
    deeper = dataclasses.replace(tile, num_stages=4)  # 3 copies on gfx942: 72 KiB
    assert deeper in everything and deeper not in small


ROUTE_LAYERS = [(suite, layer) for suite in ("smoke", "resnet50", "video") for layer in load_suite(suite)]


@pytest.mark.parametrize("arch", list(ARCHES), ids=str)
def test_every_heuristic_config_fits_its_arch(arch):
    """Each route's untimed config on every layer of the suites, sized for `arch`: within its shared
    memory (LDS) by the space's own estimate, at the arch's pipeline depth for a tl.dot route, and
    with at most 64 accumulator elements a thread (lane) on a tl.dot tile: a 64-wide wavefront
    counts as 64 lanes."""
    target = ARCHES[arch]
    for suite, layer in ROUTE_LAYERS:
        for route in REGISTRY.values():
            if not route.applies(layer.problem):
                continue
            config = route.heuristic(layer.problem, arch=target)
            where = f"{suite} {layer.name} {route.pass_name} {route.variant}: {config}"
            staged = shared_memory_bytes(config, layer.problem.element_size, route.variant, target)
            assert staged <= target.shared_memory, where
            assert config.num_stages <= target.pipeline_stages, where
            if config.num_stages > 1 and route.variant != Variant.GROUPED_TILE:  # a pipelined 2-D tl.dot loop
                assert config.num_stages == target.pipeline_stages, where
                lanes = config.num_warps * target.warp_size
                assert config.block_m * config.block_n <= 64 * lanes or target.accumulator_in_tensor_memory, where


def test_a_problem_gets_one_heuristic_config_per_arch():
    """The heuristics are cached per (problem, arch): planning for an MI300X after a Hopper (or the
    other way round) never serves the other arch's config."""
    problem = PROBLEMS["resnet 3x3"]
    with runtime.target_arch(ARCHES["sm90"]):
        hopper = wgrad_config(problem)
    with runtime.target_arch(ARCHES["gfx942"]):
        mi300x = wgrad_config(problem)
    with runtime.target_arch(ARCHES["sm90"]):
        assert wgrad_config(problem) == hopper
    assert (hopper.num_stages, mi300x.num_stages) == (3, 2)
    assert wgrad_config(problem) == hopper  # no GPU and no target: the default arch's (sm_90's) limits
    # two programs per SM (CU) share a split reduction: MI300X's 304 CUs split it further than 132 SMs
    assert mi300x.split_k >= hopper.split_k


def test_clear_winner_is_chosen():
    choice = choose({0: [1.0, 1.01, 0.99], 1: [0.5, 0.51, 0.49], 2: [0.8, 0.8, 0.8]})
    assert choice.index == 1 and choice.tied == (1,)


def test_candidates_within_the_spread_tie_and_the_earliest_wins():
    timings = {3: [0.50, 0.60, 0.40, 0.55, 0.45], 5: [0.52, 0.53, 0.51, 0.52, 0.52], 7: [0.9, 0.9, 0.9]}
    choice = choose(timings)
    assert choice.tied == (3, 5) and choice.index == 3
    assert choose(dict(reversed(list(timings.items())))) == choice, "the answer depends on dict order"


def test_noise_floor_ties_near_equal_quiet_timings():
    assert choose({4: [1.000] * 5, 2: [1.015] * 5}).index == 2
    assert choose({4: [1.000] * 5, 2: [1.050] * 5}).index == 4


def test_no_candidate_left_is_an_error():
    with pytest.raises(ValueError, match="every config failed"):
        choose({})


def test_problem_keys_are_readable_and_distinct():
    problem = PROBLEMS["resnet 3x3"]
    key = problem_key(problem, "fwd", tf32=True)
    assert key == "fwd n32 c64 h56 w56 k64 r3 s3 stride1x1 pad1x1+1x1 dil1x1 g1 bfloat16 contiguous tf32=0"
    fp32 = tritonconv.make_problem(n=1, c=3, h=5, w=6, k=4, r=3, s=3)
    assert problem_key(fp32, "fwd", tf32=True) != problem_key(fp32, "fwd", tf32=False)
    assert problem_key(fp32, "fwd", tf32=False) != problem_key(fp32, "wgrad", tf32=False)


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TRITONCONV_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("TRITONCONV_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "tritonconv"


def test_fingerprints_follow_the_kernel_and_the_space():
    assert kernel_digest("fwd", "implicit_gemm") != kernel_digest("wgrad", "implicit_gemm")
    assert fingerprint("fwd", "conv1x1")["kernel"] != fingerprint("fwd", "implicit_gemm")["kernel"]
    assert fingerprint("fwd", "conv1x1")["space"] == fingerprint("fwd", "implicit_gemm")["space"]  # same axes


ENTRY = {"variant": "implicit_gemm", "config": {"block_m": 64}, "median_ms": 0.1}


def test_cache_round_trip_and_fingerprint_miss(tmp_path):
    path = tmp_path / "dev.json"
    fp = {"triton": "x", "tritonconv": "y", "kernel": "k", "space": "s"}
    TuningCache(path).store({"a": {**ENTRY, "fingerprint": fp}})
    reader = TuningCache(path)
    assert reader.lookup("a", fp)["config"] == {"block_m": 64}
    assert reader.lookup("a", {**fp, "kernel": "changed"}) is None
    assert reader.lookup("b", fp) is None
    document = json.loads(path.read_text())
    assert document["format"] == 1 and "\n" in path.read_text(), "not human-readable JSON"
    TuningCache(path).store({"b": {**ENTRY, "fingerprint": fp}})
    assert reader.lookup("b", fp) is not None, "a reader does not see a later write"


def test_truncated_cache_is_reported_once_and_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setattr(tuning_cache, "_reported", set())
    path = tmp_path / "dev.json"
    fp = {"kernel": "k"}
    TuningCache(path).store({f"key{i}": {**ENTRY, "fingerprint": fp} for i in range(20)})
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    cache = TuningCache(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cache.lookup("key1", fp) is None
        assert TuningCache(path).lookup("key2", fp) is None
    assert len(caught) == 1 and "unreadable" in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cache.store({"fresh": {**ENTRY, "fingerprint": fp}})
    assert set(TuningCache(path).entries()) == {"fresh"}
    assert (tmp_path / "dev.json.corrupt").read_text() == text[: len(text) // 2]


WRITER = """
import sys
from tritonconv.tuning.cache import TuningCache
cache = TuningCache(sys.argv[1])
for i in range(40):
    cache.store({f"{sys.argv[2]}-{i}": {"fingerprint": {}, "median_ms": i}})
"""


def test_concurrent_writers_lose_nothing(tmp_path):
    path = tmp_path / "dev.json"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), name]) for name in ("first", "second")]
    assert [writer.wait(timeout=120) for writer in writers] == [0, 0]
    entries = TuningCache(path).entries()
    assert len(entries) == 80 and {key.split("-")[0] for key in entries} == {"first", "second"}


# Three smoke layers (a 3x3, a strided 5x5 stem, a 1x1): what the CLI tests tune, several times each.
FEW_LAYERS = "\n".join((tritonconv.problem.suites.suites_folder() / "smoke.csv").read_text().splitlines()[2:6]) + "\n"


def run_cli(cache, *args, check=True):
    env = {**os.environ, "TRITONCONV_CACHE_DIR": str(cache)}
    suite = cache / "suite" / "few.csv"
    suite.parent.mkdir(exist_ok=True)
    suite.write_text(FEW_LAYERS)
    result = subprocess.run(
        [sys.executable, "-m", "tritonconv", "tune", "--suite", str(suite), "--max-candidates", "1", *args],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if check:
        assert result.returncode == 0, result.stderr[-2000:]
    return result


def summary_line(result):
    return result.stdout.strip().splitlines()[-1]


FEW_LAYER_COUNT = 3


def test_cli_tunes_then_serves_from_cache_and_survives_truncation(tmp_path):
    first = run_cli(tmp_path)
    assert summary_line(first) == f"tuned: {FEW_LAYER_COUNT}, from cache: 0, failed: 0"
    assert "interpreter" in first.stderr, "a CPU run must say its timings mean nothing"
    assert summary_line(run_cli(tmp_path)) == f"tuned: 0, from cache: {FEW_LAYER_COUNT}, failed: 0"
    (cache_file,) = tmp_path.glob("*.json")
    text = cache_file.read_text()
    cache_file.write_text(text[: len(text) // 3])
    survived = run_cli(tmp_path)
    assert "unreadable" in survived.stderr
    assert summary_line(survived) == f"tuned: {FEW_LAYER_COUNT}, from cache: 0, failed: 0"
    assert summary_line(run_cli(tmp_path)) == f"tuned: 0, from cache: {FEW_LAYER_COUNT}, failed: 0"


def test_two_tune_processes_at_once_keep_both(tmp_path):
    env = {**os.environ, "TRITONCONV_CACHE_DIR": str(tmp_path)}
    suite = tmp_path / "few.csv"
    suite.write_text(FEW_LAYERS)
    commands = [
        [sys.executable, "-m", "tritonconv", "tune", "--suite", str(suite), "--max-candidates", "1", "--pass", name]
        for name in ("fwd", "wgrad")
    ]
    processes = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for command in commands
    ]
    assert [process.wait(timeout=600) for process in processes] == [0, 0]
    (cache_file,) = tmp_path.glob("*.json")
    passes = sorted(key.split()[0] for key in TuningCache(cache_file).entries())
    assert passes == ["fwd"] * FEW_LAYER_COUNT + ["wgrad"] * FEW_LAYER_COUNT


def test_explain_reports_the_config_source(tmp_path, monkeypatch):
    from tritonconv.plan import dispatch
    from tritonconv.tuning.session import tune_problems

    monkeypatch.setenv("TRITONCONV_CACHE_DIR", str(tmp_path))
    dispatch.forget_plans()
    x, weight = torch.randn(1, 8, 6, 6), torch.randn(16, 8, 3, 3)
    assert tritonconv.explain(x, weight, padding=1)["config_source"] == "heuristic"
    problem = tritonconv.problem_from_tensors(x, weight, padding=1)
    summary = tune_problems([problem], ["fwd"], timer=lambda fn: [1.0], max_candidates=2)
    assert (summary.tuned, summary.cached) == (1, 0)
    explained = tritonconv.explain(x, weight, padding=1)
    assert explained["config_source"] == "tuned cache"
    entry = json.loads(next(tmp_path.glob("*.json")).read_text())["entries"]
    (stored,) = entry.values()
    assert explained["config"] == stored["config"] and explained["variant"] == stored["variant"]
    monkeypatch.setenv("TRITONCONV_AUTOTUNE", "off")
    assert tritonconv.explain(x, weight, padding=1)["config_source"] == "heuristic"
    monkeypatch.setenv("TRITONCONV_AUTOTUNE", "sometimes")
    with pytest.raises(ValueError, match="TRITONCONV_AUTOTUNE"):
        tritonconv.explain(x, weight, padding=1)
    dispatch.forget_plans()


def test_mode_on_tunes_a_new_problem_on_first_use(tmp_path, monkeypatch):
    from tritonconv.plan import dispatch

    monkeypatch.setenv("TRITONCONV_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("TRITONCONV_AUTOTUNE", "on")
    monkeypatch.setattr("tritonconv.tuning.tuner.INTERPRETER_CANDIDATES", 1)
    dispatch.forget_plans()
    x, weight = torch.randn(1, 4, 5, 5), torch.randn(8, 4, 3, 3)
    assert tritonconv.explain(x, weight)["config_source"] == "tuned now"
    y = tritonconv.conv2d(x, weight)
    torch.testing.assert_close(y, torch.nn.functional.conv2d(x, weight), rtol=1e-4, atol=1e-4)
    dispatch.forget_plans()
    assert tritonconv.explain(x, weight)["config_source"] == "tuned cache"
    dispatch.forget_plans()


def test_gate_records_wrong_and_failing_configs_and_never_picks_them(monkeypatch):
    from tritonconv.tuning import tuner

    problem = tritonconv.make_problem(n=1, c=8, h=6, w=6, k=16, r=3, s=3, padding=1)
    configs = candidates(problem, "fwd", "implicit_gemm")[:3]
    wrong, broken, good = configs
    real = tuner.conv2d_fwd

    def faulty(x, weight, bias, problem, plan):
        if plan.config == broken:
            raise RuntimeError("out of resources: shared memory")
        y = real(x, weight, bias, problem, plan)
        return y + 1 if plan.config == wrong else y

    monkeypatch.setattr(tuner, "conv2d_fwd", faulty)
    monkeypatch.setattr(tuner, "candidates", lambda *args: configs)
    monkeypatch.setattr(tuner, "tuned_variants", lambda *args: ["implicit_gemm"])
    timed = []  # the gate must keep the faulty configs from being timed at all
    entry = tuner.tune_problem(problem, "fwd", timer=lambda fn: timed.append(fn) or [5.0], max_candidates=None)
    reasons = sorted(failure["reason"].split(":")[0] for failure in entry["failed"])
    assert reasons == ["RuntimeError", "wrong result"], entry["failed"]
    assert entry["config"] == good.as_dict() and len(timed) == 2  # the good config, then torch's own kernel


def tune_into(directory, *problems):
    from tritonconv.tuning.session import device_cache, tune_problems

    return tune_problems(problems, ["fwd"], cache=device_cache(directory), timer=lambda fn: [1.0], max_candidates=1)


def source_of(x, weight, **kwargs):
    from tritonconv.plan import dispatch

    dispatch.forget_plans()
    explained = tritonconv.explain(x, weight, **kwargs)
    dispatch.forget_plans()
    return explained["config_source"], explained["config"]


def test_shipped_table_serves_after_the_users_cache(tmp_path, monkeypatch):
    import shutil

    x, weight = torch.randn(1, 8, 6, 6), torch.randn(16, 8, 3, 3)
    problem = tritonconv.problem_from_tensors(x, weight, padding=1)
    tune_into(tmp_path / "build", problem)
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (built,) = (tmp_path / "build").glob("*.json")
    shutil.copy(built, shipped / built.name)
    monkeypatch.setattr("tritonconv.problem.suites.suites_folder", lambda: shipped)
    monkeypatch.setenv("TRITONCONV_CACHE_DIR", str(tmp_path / "user"))
    assert source_of(x, weight, padding=1)[0] == "shipped table"
    tune_into(tmp_path / "user", problem)
    assert source_of(x, weight, padding=1)[0] == "tuned cache"


def test_untuned_shape_borrows_from_the_nearest_of_its_class(tmp_path, monkeypatch):
    from tritonconv.tuning.cache import problem_key
    from tritonconv.tuning.tuner import tf32_key

    monkeypatch.setenv("TRITONCONV_CACHE_DIR", str(tmp_path))
    near = tritonconv.make_problem(n=1, c=8, h=6, w=6, k=16, r=3, s=3, padding=1)
    far = tritonconv.make_problem(n=1, c=64, h=6, w=6, k=16, r=3, s=3, padding=1)
    other_class = tritonconv.make_problem(n=1, c=16, h=6, w=6, k=16, r=5, s=5, padding=2)
    tune_into(tmp_path, near, far, other_class)
    x, weight = torch.randn(2, 16, 6, 6), torch.randn(16, 16, 3, 3)
    source, config = source_of(x, weight, padding=1)
    near_key = problem_key(near, "fwd", tf32_key())
    assert source == f"nearest tuned shape: {near_key}"
    entries = json.loads(next(tmp_path.glob("*.json")).read_text())["entries"]
    assert config == entries[near_key]["config"]
    x7, weight7 = torch.randn(1, 16, 9, 9), torch.randn(16, 16, 7, 7)
    assert source_of(x7, weight7, padding=3)[0] == "heuristic", "a 7x7 borrowed from a 3x3 or a 5x5"
    monkeypatch.setenv("TRITONCONV_AUTOTUNE", "off")
    assert source_of(x, weight, padding=1)[0] == "heuristic"


def test_an_entry_with_an_unknown_config_field_falls_back_to_the_heuristic(tmp_path, monkeypatch):
    from tritonconv.tuning.session import device_cache

    monkeypatch.setenv("TRITONCONV_CACHE_DIR", str(tmp_path))
    x, weight = torch.randn(1, 8, 6, 6), torch.randn(16, 8, 3, 3)
    problem = tritonconv.problem_from_tensors(x, weight, padding=1)
    tune_into(tmp_path, problem)
    cache = device_cache(tmp_path)
    ((key, entry),) = cache.entries().items()
    cache.store({key: {**entry, "config": {**entry["config"], "block_q": 32}}})
    assert source_of(x, weight, padding=1)[0] == "heuristic"


def sequenced_timer(*medians):
    """A timer that gives the n-th timed candidate medians[n]: which route wins is up to the test."""
    calls = iter(medians)
    return lambda fn: [next(calls)] * 3


@needs_runtime_loops
@pytest.mark.parametrize(
    "pass_name, shape, routes",
    [
        ("dgrad", dict(c=8, k=16, r=1, s=1, padding=0, groups=1), ("conv1x1", "implicit_gemm")),
        ("dgrad", dict(c=8, k=8, r=3, s=3, padding=1, groups=8), ("depthwise", "implicit_gemm")),
        ("wgrad", dict(c=8, k=16, r=3, s=3, padding=1, groups=8), ("depthwise", "implicit_gemm")),
    ],
    ids=["dgrad 1x1", "dgrad depthwise", "wgrad depthwise"],
)
@pytest.mark.parametrize("winner", [0, 1])
def test_a_gradient_tunes_every_route_and_its_backward_launches_the_winner(
    pass_name, shape, routes, winner, tmp_path, monkeypatch
):
    """The specialised route and the general kernels compete; the backward of a conv then runs the
    winner (with its tuned config), and explain says so."""
    from tritonconv.plan import dispatch
    from tritonconv.tuning.session import tune_problems

    monkeypatch.setenv("TRITONCONV_CACHE_DIR", str(tmp_path))
    dispatch.forget_plans()
    x = torch.randn(2, shape["c"], 6, 6, requires_grad=True)
    weight = torch.randn(shape["k"], shape["c"] // shape["groups"], shape["r"], shape["s"], requires_grad=True)
    geometry = dict(padding=shape["padding"], groups=shape["groups"])
    problem = tritonconv.problem_from_tensors(x, weight, **geometry)
    assert tritonconv.explain(x, weight, **geometry)["backward"][pass_name]["variant"] == routes[0]
    medians = [2.0, 2.0]
    medians[winner] = 1.0
    timer = sequenced_timer(*medians, 3.0)  # the two routes, then torch's own kernel (slowest)
    summary = tune_problems([problem], [pass_name], timer=timer, max_candidates=1)
    assert (summary.tuned, summary.failed) == (1, 0)
    (entry,) = json.loads(next(tmp_path.glob("*.json")).read_text())["entries"].values()
    assert entry["candidates"] == 2 and entry["variant"] == routes[winner]
    explained = tritonconv.explain(x, weight, **geometry)["backward"][pass_name]
    assert explained == {"variant": routes[winner], "config": entry["config"], "config_source": "tuned cache",
                         "timing": {"chosen": routes[winner], "source": "tuned cache", "triton_route": routes[winner],
                                    "triton_ms": 1.0, "torch_ms": 3.0, "torch_over_chosen": 3.0}}  # fmt: skip

    from tritonconv.routes import registry

    launched = []
    for route in ("conv1x1", "depthwise"):
        key = (registry.Pass(pass_name), registry.Variant(route))
        if key in registry.REGISTRY:
            spec = registry.REGISTRY[key]
            record = functools.partial(recording_launcher, launched, route, spec.prepare)
            monkeypatch.setitem(registry.REGISTRY, key, dataclasses.replace(spec, prepare=record))
    y = tritonconv.conv2d(x, weight, **geometry)
    grad_output = torch.randn_like(y)
    y.backward(grad_output)
    expected = torch.autograd.grad(
        torch.nn.functional.conv2d(x.double(), weight.double(), **geometry), (x, weight), grad_output.double()
    )  # fmt: skip
    torch.testing.assert_close(x.grad, expected[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(weight.grad, expected[1], rtol=1e-4, atol=1e-4)
    assert (routes[winner] in launched) == (routes[winner] != "implicit_gemm")
    dispatch.forget_plans()


def test_a_cached_route_the_problem_does_not_have_serves_the_heuristic(tmp_path, monkeypatch):
    """A hand-edited entry naming another problem's route must not launch a kernel that computes
    something else."""
    from tritonconv.tuning.session import device_cache

    monkeypatch.setenv("TRITONCONV_CACHE_DIR", str(tmp_path))
    x, weight = torch.randn(1, 8, 6, 6), torch.randn(16, 8, 3, 3)
    problem = tritonconv.problem_from_tensors(x, weight, padding=1)
    from tritonconv.tuning.session import tune_problems

    tune_problems([problem], ["dgrad"], cache=device_cache(tmp_path), timer=lambda fn: [1.0], max_candidates=1)
    cache = device_cache(tmp_path)
    ((key, entry),) = cache.entries().items()
    assert source_of_pass(x, weight, "dgrad", padding=1) == "tuned cache"
    cache.store({key: {**entry, "variant": "conv1x1"}})
    assert source_of_pass(x, weight, "dgrad", padding=1) == "heuristic"


def source_of_pass(x, weight, pass_name, **kwargs):
    from tritonconv.plan import dispatch

    dispatch.forget_plans()
    explained = tritonconv.explain(x, weight, **kwargs)["backward"][pass_name]
    dispatch.forget_plans()
    return explained["config_source"]
