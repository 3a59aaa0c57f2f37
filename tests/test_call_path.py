"""The call path: one-way imports, prepared calls that replay bit for bit what planning launches, and
a re-plan whenever anything in a call's key changes."""

import ast
import dataclasses
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conv_reference import needs_runtime_loops

import tritonconv
from tritonconv.ops.epilogue import NO_EPILOGUE
from tritonconv.plan import dispatch, prepared
from tritonconv.problem.arithmetic import make_problem_3d, memory_format_of
from tritonconv.problem.runtime import POISON_ENV
from tritonconv.routes import calls, registry
from tritonconv.routes.registry import Pass, Plan, Variant
from tritonconv.tuning import cache as tuning_cache

PACKAGE = Path(tritonconv.__file__).parent

# The package's folders from the bottom up, written once: a module may import from its own folder or
# a lower one, never a higher one. `_version` sits below them all, the package itself (`__init__`,
# the public API) beside the tools (the command line and the demo call it), `__main__` above all.
FOLDERS = ("problem", "kernels", "ops", "routes", "tuning", "plan", "frontend", "models", "tools")
TOP_LEVEL = {"_version": -1, "": FOLDERS.index("tools"), "__main__": len(FOLDERS)}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(anywhere: bool = False) -> dict[str, set[str]]:
    """Module (dotted, relative to the package) -> the package's modules it imports at module level
    (`anywhere`: inside functions too)."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        imported = set()
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree) if anywhere else tree.body:
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
                for alias in node.names:
                    child = f"{target}.{alias.name}".lstrip(".")
                    imported.add(child if child in modules else target)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tritonconv"):
                target = node.module.removeprefix("tritonconv").lstrip(".")
                for alias in node.names:
                    child = f"{target}.{alias.name}".lstrip(".")
                    imported.add(child if child in modules else target)
        graph[name] = {module for module in imported if module in modules and module != name}
    return graph


def layer_of(module: str) -> int:
    """The rank of the module's folder in `FOLDERS` (`TOP_LEVEL` for the package's own modules)."""
    if module in TOP_LEVEL:
        return TOP_LEVEL[module]
    folder = module.split(".")[0]
    assert folder in FOLDERS, f"{module} is in no folder of FOLDERS"
    return FOLDERS.index(folder)


def layer_name(module: str) -> str:
    rank = layer_of(module)
    return FOLDERS[rank] if 0 <= rank < len(FOLDERS) else f"top level {module or '__init__'}"


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert len(graph) > 40, "the walk found the package's modules"
    state: dict[str, int] = {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = 1
        for child in sorted(graph[module]):
            if state.get(child) == 1:
                cycle = [*trail[trail.index(child) :], child] if child in trail else [module, child]
                pytest.fail(f"import cycle: {' -> '.join(cycle)}")
            if child not in state:
                visit(child, [*trail, child])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_nothing_imports_from_a_folder_above_its_own():
    """Imports anywhere in a module (inside functions too) go to its own folder or lower ones."""
    upward = [
        f"{module} ({layer_name(module)}) imports {child} ({layer_name(child)})"
        for module, children in import_graph(anywhere=True).items()
        for child in children
        if layer_of(child) > layer_of(module)
    ]
    assert upward == []


def test_the_package_keeps_its_modules_in_folders():
    top_level = sorted(path.stem for path in PACKAGE.glob("*.py"))
    assert [name for name in top_level if name not in ("__init__", "__main__", "_version")] == []
    folders = sorted(path.name for path in PACKAGE.iterdir() if (path / "__init__.py").exists())
    assert folders == sorted(FOLDERS)


def test_a_planted_upward_import_is_caught():
    """The check can fail: a problem/ module that imports a front end is reported."""
    planted = {**import_graph(anywhere=True), "problem.planted": {"frontend.functional"}}
    assert [m for m, children in planted.items() for c in children if layer_of(c) > layer_of(m)] == ["problem.planted"]


# ---- prepared calls replay bit for bit ---------------------------------------------------------

# (pass, variant): (n, c, h, w, k, r, s, stride, padding, groups)
ROUTE_PROBLEMS = {
    (Pass.FWD, Variant.IMPLICIT_GEMM): (2, 4, 6, 5, 8, 3, 3, 1, 1, 1),
    (Pass.FWD, Variant.CONV1X1): (2, 16, 5, 6, 16, 1, 1, 1, 0, 1),
    (Pass.FWD, Variant.GROUPED_TILE): (2, 8, 5, 5, 8, 3, 3, 1, 1, 2),
    (Pass.FWD, Variant.DEPTHWISE): (2, 8, 6, 6, 8, 3, 3, 1, 1, 8),
    (Pass.FWD, Variant.TMA): (2, 8, 6, 5, 16, 3, 3, 1, 1, 1),
    (Pass.DGRAD, Variant.CONV1X1): (2, 16, 5, 6, 16, 1, 1, 1, 0, 1),
    (Pass.DGRAD, Variant.DEPTHWISE): (2, 8, 6, 6, 8, 3, 3, 1, 1, 8),
    (Pass.DGRAD, Variant.STRIDE_PHASED): (2, 4, 7, 6, 16, 3, 3, 2, 1, 1),
    (Pass.DGRAD, Variant.IMPLICIT_GEMM): (2, 4, 6, 5, 8, 3, 3, 1, 1, 1),
    (Pass.DGRAD, Variant.TMA): (2, 8, 6, 5, 16, 3, 3, 1, 1, 1),
    (Pass.WGRAD, Variant.DEPTHWISE): (2, 8, 6, 6, 8, 3, 3, 1, 1, 8),
    (Pass.WGRAD, Variant.IMPLICIT_GEMM): (2, 4, 6, 5, 8, 3, 3, 2, 1, 1),
    (Pass.WGRAD, Variant.TMA): (2, 8, 6, 5, 16, 3, 3, 1, 1, 1),
}
# The long-sequence depthwise conv1d routes: H = 1, a 1 x 4 kernel, padding 0 x 3 (written out below).
ROUTE_PROBLEMS |= {(pass_name, Variant.DEPTHWISE_1D): "sequence" for pass_name in Pass}
# 3-D routes: (n, c, d, h, w, k, t, r, s, stride, padding, groups)
VOLUME_CASE = (2, 4, 4, 5, 3, 8, 3, 2, 3, 2, 1, 2)
ROUTE_PROBLEMS |= {(pass_name, Variant.IMPLICIT_GEMM_3D): VOLUME_CASE for pass_name in Pass}
ROUTE_PROBLEMS[Pass.FWD, Variant.DEPTHWISE_3D] = (2, 8, 4, 5, 3, 8, 3, 2, 3, 2, 1, 8)
ROUTE_PROBLEMS[Pass.WGRAD, Variant.DEPTHWISE_3D] = (2, 8, 4, 5, 3, 16, 3, 2, 3, 2, 1, 8)
ROUTE_PROBLEMS[Pass.DGRAD, Variant.DEPTHWISE_3D] = (2, 8, 4, 5, 3, 8, 3, 2, 3, 1, 1, 8)
# torch's own route (every pass): a strided grouped convolution
ROUTE_PROBLEMS |= {(pass_name, Variant.TORCH): (2, 4, 7, 6, 8, 3, 3, 2, 1, 2) for pass_name in Pass}


def _route_problem(route, layout):
    sizes = ROUTE_PROBLEMS[route]
    if sizes == "sequence":
        return tritonconv.make_problem(n=2, c=8, h=1, w=13, k=8, r=1, s=4, padding=(0, 3), groups=8, layout=layout)
    if route[1].endswith("_3d"):
        n, c, d, h, w, k, t, r, s, stride, padding, groups = sizes
        return make_problem_3d(n=n, c=c, d=d, h=h, w=w, k=k, t=t, r=r, s=s, stride=stride,
                                                     padding=padding, groups=groups, layout=layout)  # fmt: skip
    n, c, h, w, k, r, s, stride, padding, groups = sizes
    return tritonconv.make_problem(n=n, c=c, h=h, w=w, k=k, r=r, s=s, stride=stride, padding=padding, groups=groups,
                                   layout=layout)  # fmt: skip


def calls_between(layers: tuple[str, str], call) -> list[str]:
    """'caller -> callee' for each Python call `call()` makes from one of the two package folders
    into the other, in order."""
    crossings = []

    def folder(frame) -> tuple[str | None, str]:
        module = frame.f_globals.get("__name__", "") if frame is not None else ""
        parts = module.split(".")
        return (parts[1] if len(parts) > 1 and parts[0] == "tritonconv" else None), module

    def profile(frame, event, arg):
        if event == "call":
            (callee_folder, callee), (caller_folder, caller) = folder(frame), folder(frame.f_back)
            if {callee_folder, caller_folder} == set(layers):
                crossings.append(f"{caller}.{frame.f_back.f_code.co_name} -> {callee}.{frame.f_code.co_name}")

    sys.setprofile(profile)
    try:
        call()
    finally:
        sys.setprofile(None)
    return crossings


@pytest.mark.parametrize("fused", [False, True], ids=["plain", "fused"])
def test_a_forward_call_goes_from_the_front_end_to_the_plan_and_never_back(fused, device):
    """A conv2d with a new key: the front end asks the plan layer for the prepared call (which
    validates, plans and prepares it alone) and runs it; the plan layer never calls back into the
    front end."""
    x = torch.randn(1, 3, 5, 6, device=device)
    weight = torch.randn(4, 3, 3, 3, device=device)
    residual = torch.randn(1, 4, 5, 6, device=device) if fused else None
    options = {"activation": "relu", "residual": residual} if fused else {}
    prepared._prepared.clear()
    walk = calls_between(("frontend", "plan"), lambda: tritonconv.conv2d(x, weight, padding=1, **options))
    assert walk, "the walk sees the call"
    back = [step for step in walk if step.startswith("tritonconv.plan")]
    assert not back, f"the plan layer called back into the front end: {back}"
    assert any(step.endswith("plan.prepared.prepared_conv") for step in walk), walk


def test_every_route_has_a_replay_case():
    assert set(ROUTE_PROBLEMS) == set(registry.REGISTRY)


def _operands(problem, device, channels_last):
    return [
        torch.randn(shape, device=device).to(memory_format=memory_format_of(len(shape), channels_last))
        for shape in (problem.input_shape, problem.weight_shape, problem.output_shape)
    ]


CHANNELS_LAST_ONLY = {(pass_name, Variant.TMA) for pass_name in Pass}  # descriptors address NHWC rows
REPLAY_CASES = [(route, layout) for route in ROUTE_PROBLEMS for layout in (False, True)
                if layout or route not in CHANNELS_LAST_ONLY]  # fmt: skip


@needs_runtime_loops
@pytest.mark.parametrize(
    "route, channels_last", REPLAY_CASES,
    ids=["/".join(route) + ("-channels_last" if layout else "-nchw") for route, layout in REPLAY_CASES],
)  # fmt: skip
def test_a_prepared_call_replays_the_planned_launch_bit_for_bit(route, channels_last, device):
    """The first call prepares the launch; a later call with fresh tensors of the same key replays it
    with only the pointers changed, and must give exactly what planning and launching anew gives."""
    pass_name, variant = route
    problem = _route_problem(route, "channels_last" if channels_last else "contiguous")
    route_spec = registry.spec(pass_name, variant)
    assert route_spec.applies(problem)
    configs = [route_spec.heuristic(problem)]
    if pass_name == Pass.WGRAD:  # one split writes dW directly; several go through the workspace
        configs = [dataclasses.replace(configs[0], split_k=split) for split in (1, 3)]
    for config in configs:
        plan = Plan(variant, config, "test")
        first = _operands(problem, device, channels_last)
        call = prepared.PreparedConv(problem, first[0], first[1], NO_EPILOGUE, plans={pass_name: plan})
        replay = {
            Pass.FWD: lambda x, weight, dy, call=call: call.forward(x, weight, None),
            Pass.DGRAD: lambda x, weight, dy, call=call: call.input_grad(dy, weight),
            Pass.WGRAD: lambda x, weight, dy, call=call: call.weight_grad(x, dy),
        }[pass_name]
        planned = {
            Pass.FWD: lambda x, weight, dy, plan=plan: calls.conv2d_fwd(x, weight, None, problem, plan),
            Pass.DGRAD: lambda x, weight, dy, plan=plan: calls.conv2d_dgrad(dy, weight, problem, channels_last, plan),
            Pass.WGRAD: lambda x, weight, dy, plan=plan: calls.conv2d_wgrad(x, dy, problem, channels_last, plan),
        }[pass_name]
        torch.testing.assert_close(replay(*first), planned(*first))  # the first call prepares
        fresh = _operands(problem, device, channels_last)
        got, expected = replay(*fresh), planned(*fresh)
        assert got.stride() == expected.stride()
        assert torch.equal(got, expected), f"{pass_name}/{variant} {config}: the replay differs"
        assert not torch.equal(got, replay(*first)), "the replay read the new tensors"


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_the_custom_ops_replay_prepared_calls_bit_for_bit(channels_last, device):
    """torch.compile's ops (forward, dX, dW) prepare once per key, as eager calls do, and a replay
    with fresh tensors gives exactly what the planned path gives."""
    problem = tritonconv.make_problem(n=2, c=4, h=7, w=6, k=8, r=3, s=3, stride=2, padding=1,
                                      layout="channels_last" if channels_last else "contiguous")  # fmt: skip
    geometry = ([2, 2], [1, 1, 1, 1], [1, 1], 1)
    ops = torch.ops.tritonconv
    replays = {
        Pass.FWD: lambda x, weight, dy: ops.conv2d(x, weight, None, *geometry),
        Pass.DGRAD: lambda x, weight, dy: ops.conv2d_input_grad(dy, weight, list(x.shape), channels_last, *geometry),
        Pass.WGRAD: lambda x, weight, dy: ops.conv2d_weight_grad(dy, x, list(weight.shape), channels_last, *geometry),
    }
    planned = {
        Pass.FWD: lambda x, weight, dy: calls.conv2d_fwd(x, weight, None, problem, dispatch.plan_pass(problem, "fwd")),
        Pass.DGRAD: lambda x, weight, dy: calls.conv2d_dgrad(dy, weight, problem, channels_last,
                                                             dispatch.plan_pass(problem, "dgrad")),
        Pass.WGRAD: lambda x, weight, dy: calls.conv2d_wgrad(x, dy, problem, channels_last,
                                                             dispatch.plan_pass(problem, "wgrad")),
    }  # fmt: skip
    for pass_name, replay in replays.items():
        first = _operands(problem, device, channels_last)
        torch.testing.assert_close(replay(*first), planned[pass_name](*first))
        fresh = _operands(problem, device, channels_last)
        before = prepared.builds()
        got = replay(*fresh)
        assert prepared.builds() == before, f"{pass_name}: the op's second call with the same key re-planned"
        expected = planned[pass_name](*fresh)
        assert got.stride() == expected.stride() and torch.equal(got, expected), f"{pass_name}: the replay differs"


def test_a_gradient_route_planned_before_tuning_could_run_is_not_kept(device, monkeypatch):
    """A plan that is not final (mode 'on' while tuning is forbidden, e.g. during CUDA-graph capture)
    serves the call that asked for it and is planned again on the next backward."""
    problem = tritonconv.make_problem(n=1, c=4, h=5, w=5, k=4, r=3, s=3, padding=1)
    x, weight, grad_output = _operands(problem, device, False)
    call = prepared.PreparedConv(problem, x, weight, NO_EPILOGUE)
    planned = []

    def not_final(problem, pass_name):
        planned.append(pass_name)
        return dispatch.heuristic_plan(problem, pass_name), pass_name != Pass.DGRAD

    monkeypatch.setattr(prepared, "plan_and_finality", not_final)
    first = call.input_grad(grad_output, weight)
    assert torch.equal(call.input_grad(grad_output, weight), first)
    call.weight_grad(x, grad_output)
    call.weight_grad(x, grad_output)
    assert planned == [Pass.DGRAD, Pass.DGRAD, Pass.WGRAD]


# ---- a changed key re-plans ------------------------------------------------------------------


def _reference(x, weight, bias, **geometry):
    return F.conv2d(x.double(), weight.double(), bias.double(), **geometry)


def test_changing_anything_in_the_key_re_plans(device, restore_tf32, tmp_path, monkeypatch):
    """Same shapes, one thing changed between two calls: a new plan each time, and a right answer."""
    x = torch.randn(2, 8, 6, 7, device=device)
    weight, bias = torch.randn(16, 8, 3, 3, device=device), torch.randn(16, device=device)

    def run(x=x, weight=weight, bias=bias, **extra):
        before = prepared.builds()
        y = tritonconv.conv2d(x, weight, bias, padding=1, **extra)
        return y, prepared.builds() - before

    run()
    y, built = run(x.clone(), weight.clone(), bias.clone())
    assert built == 0, "same key, new tensors: the prepared call is replayed"
    torch.testing.assert_close(y.double(), _reference(x, weight, bias, padding=1), rtol=1e-4, atol=1e-4)

    wide = torch.randn(2, 8, 6, 9, device=device)[..., 1:8]  # same shape, other strides
    wide.copy_(x)
    changes = {
        "strides": lambda: run(wide),
        "dtype": lambda: run(x.double(), weight.double(), bias.double()),
        "memory format": lambda: run(x.to(memory_format=torch.channels_last)),
        "tf32": lambda: (setattr(torch.backends.cudnn, "allow_tf32", not torch.backends.cudnn.allow_tf32), run())[1],
        "autocast": lambda: _under_autocast(device, run),
        "epilogue": lambda: run(activation="relu"),
        "tuning cache": lambda: (tuning_cache.TuningCache(tmp_path / "c.json").store({}), run())[1],
    }
    for change, call in changes.items():
        y, built = call()
        assert built == 1, f"changing {change} must re-plan"
        expected = _reference(x, weight, bias, padding=1)
        if change == "epilogue":
            expected = expected.relu()
        atol = 0.25 if change == "autocast" else 1e-2  # bf16 operands: 8 bits over a 72-term sum
        torch.testing.assert_close(y.double(), expected, rtol=5e-2, atol=atol, msg=change)


def _under_autocast(device, run):
    with torch.autocast(device, dtype=torch.bfloat16):
        y, built = run()
    assert y.dtype == torch.bfloat16
    return y, built


def test_the_key_names_the_device_and_the_autotune_mode(monkeypatch):
    x, weight = torch.randn(1, 4, 5, 5), torch.randn(8, 4, 3, 3)
    geometry = (1, 1, 1, 1)
    here = prepared.call_key(x, weight, None, geometry)
    elsewhere = prepared.call_key(x.to("meta"), weight.to("meta"), None, geometry)
    assert here != elsewhere
    monkeypatch.setenv(dispatch.AUTOTUNE_ENV, "off")
    autotune_off = prepared.call_key(x, weight, None, geometry)
    assert autotune_off != here
    keys = []
    for poison in ("0", "1", "0"):  # read per call, at a dict lookup's cost (runtime.environment_reader)
        monkeypatch.setenv(POISON_ENV, poison)
        keys.append(prepared.call_key(x, weight, None, geometry))
    assert keys[0] != keys[1] and keys[0] == keys[2]


def test_a_wgrad_of_one_split_launches_once_and_a_split_one_twice(device):
    """No workspace and no reduction pass when the N*P*Q reduction is not split."""
    from tritonconv.ops import launch

    problem = tritonconv.make_problem(n=2, c=4, h=8, w=8, k=8, r=3, s=3, padding=1)
    x, weight, grad_output = _operands(problem, device, False)
    for split, expected in ((1, 1), (2, 2)):
        plan = Plan(
            Variant.IMPLICIT_GEMM,
            dataclasses.replace(registry.spec("wgrad", "implicit_gemm").heuristic(problem), split_k=split),
            "t",
        )
        call = prepared.PreparedConv(problem, x, weight, NO_EPILOGUE, plans={Pass.WGRAD: plan})
        launched = []
        launch.STUB = lambda kernel_launch, *pointers, launched=launched: launched.append(kernel_launch)
        try:
            call.weight_grad(x, grad_output)
        finally:
            launch.STUB = None
        assert len(launched) == expected


def test_explain_names_routes_as_strings_and_offers_grouped_tile_only_to_grouped_convolutions():
    """`explain()` printed its route as `<Variant.IMPLICIT_GEMM: 'implicit_gemm'>` and listed
    grouped_tile among the forward routes of a groups=1 problem."""
    dense = tritonconv.explain(torch.randn(1, 4, 6, 6), torch.randn(8, 4, 3, 3), padding=1)
    assert type(dense["variant"]) is str and repr(dense["variant"]) == "'implicit_gemm'"
    assert all(type(entry["variant"]) is str for entry in dense["backward"].values())
    assert "grouped_tile" not in dense["routes"]["fwd"]
    grouped = tritonconv.explain(torch.randn(1, 8, 6, 6), torch.randn(8, 2, 3, 3), padding=1, groups=4)
    assert grouped["variant"] == "grouped_tile" and "grouped_tile" in grouped["routes"]["fwd"]
