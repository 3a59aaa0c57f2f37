"""Every convolution kind of a patched model under torch.compile (Inductor, static and dynamic shapes)
and torch.export: the graph holds tritonconv's ops and no aten convolution, values and gradients
are torch's, `stats()` counts the calls the graphs make, and tritonconv's code raises no warning."""

import copy
import warnings

import pytest
import torch
from conv_reference import needs_runtime_loops
from torch import nn
from torch._inductor.compile_fx import compile_fx

import tritonconv

TOLERANCE = {"atol": 1e-4, "rtol": 1e-4}

# (module, two input shapes): each kind, strided or padded so a shape change moves every size.
KINDS = {
    "conv1d": (lambda: nn.Conv1d(3, 4, 3, padding=1), [(2, 3, 9), (3, 3, 12)]),
    "conv2d": (lambda: nn.Conv2d(3, 4, 3, stride=2, padding=1), [(2, 3, 6, 7), (1, 3, 9, 8)]),
    "conv3d": (lambda: nn.Conv3d(3, 4, (2, 3, 3), padding=(0, 1, 1)), [(2, 3, 3, 5, 6), (1, 3, 4, 4, 5)]),
    "conv_transpose1d": (lambda: nn.ConvTranspose1d(3, 4, 3, stride=2, output_padding=1), [(2, 3, 5), (1, 3, 7)]),
    "conv_transpose2d": (lambda: nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1), [(2, 3, 4, 5), (1, 3, 5, 3)]),
    "conv_transpose3d": (lambda: nn.ConvTranspose3d(3, 4, 2, stride=(1, 2, 2)), [(2, 3, 2, 3, 4), (1, 3, 3, 2, 3)]),
}
TRITONCONV_OPS = {"tritonconv.conv2d.default", "tritonconv.conv2d_input_grad.default"}


def _pair(kind: str) -> tuple[nn.Module, nn.Module]:
    torch._dynamo.reset()  # each test compiles afresh (the layers share forwards: a cache limit per code object)
    torch.manual_seed(0)
    reference = KINDS[kind][0]()
    model = copy.deepcopy(reference)
    report = tritonconv.patch(model)
    assert len(report.patched) + len(report.routed) == 1, report
    return reference, model


def _convolutions(graph: torch.fx.Graph) -> set[str]:
    return {str(node.target) for node in graph.nodes if node.op == "call_function" and "conv" in str(node.target)}


def _check_step(model, reference, compiled, shape) -> None:
    x = torch.randn(shape, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    got, expected = compiled(x), reference(x_ref)
    torch.testing.assert_close(got, expected, **TOLERANCE)
    grad = torch.randn_like(expected)
    got.backward(grad)
    expected.backward(grad)
    torch.testing.assert_close(x.grad, x_ref.grad, **TOLERANCE)
    for ours, theirs in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(ours.grad, theirs.grad, **TOLERANCE)
        ours.grad = theirs.grad = None


@needs_runtime_loops
@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_a_compiled_patched_model_runs_tritonconv_ops_with_torch_s_values_and_gradients(kind, dynamic):
    reference, model = _pair(kind)
    graphs = []

    def inductor(graph_module, example_inputs):
        graphs.append(graph_module.graph)
        return compile_fx(graph_module, example_inputs)

    compiled = torch.compile(model, backend=inductor, dynamic=dynamic)
    tritonconv.reset_stats()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for shape in KINDS[kind][1]:
            _check_step(model, reference, compiled, shape)
    # Dynamo's lru_cache warning names the cached function's file only, so it is looked for by name.
    ours = [w for w in caught if "tritonconv" in f"{w.filename} {w.message}" or "lru_cache" in str(w.message)]
    assert not ours, [f"{w.filename}:{w.lineno}: {w.message}" for w in ours]
    assert graphs, "nothing was compiled"
    found = set().union(*map(_convolutions, graphs))
    assert found and found <= TRITONCONV_OPS, found
    assert tritonconv.stats() == {kind: {"tritonconv": 2, "torch": 0, "fallbacks": {}}}, tritonconv.stats()
    explained = torch._dynamo.explain(model)(torch.randn(KINDS[kind][1][0]))
    assert explained.graph_break_count == 0, explained.break_reasons


class _Model(nn.Module):
    """A model whose forward takes one input, as exported models' do."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


@needs_runtime_loops
@pytest.mark.parametrize("kind", list(KINDS))
def test_an_exported_patched_model_holds_tritonconv_ops_and_runs(kind):
    reference, model = _pair(kind)
    first = KINDS[kind][1][0]
    x = torch.randn(first)
    program = torch.export.export(_Model(model), (x,))
    found = _convolutions(program.graph)
    assert found and found <= TRITONCONV_OPS, found
    tritonconv.reset_stats()
    exported = program.module()
    torch.testing.assert_close(exported(x), reference(x), **TOLERANCE)
    assert tritonconv.stats()[kind]["tritonconv"] == 1, tritonconv.stats()
    batch = torch.export.Dim("batch", min=1, max=8)
    dynamic = torch.export.export(_Model(model), (x,), dynamic_shapes=({0: batch},))
    y = torch.randn(5, *first[1:])
    torch.testing.assert_close(dynamic.module()(y), reference(y), **TOLERANCE)


FUSED_BLOCKS = {
    "conv2d": (nn.Conv2d, nn.BatchNorm2d, 2, "tritonconv.conv2d.default"),
    "conv3d": (nn.Conv3d, nn.BatchNorm3d, 3, "tritonconv.conv2d.default"),
    "conv_transpose2d": (nn.ConvTranspose2d, nn.BatchNorm2d, 2, "tritonconv.conv2d_input_grad.default"),
    "conv_transpose3d": (nn.ConvTranspose3d, nn.BatchNorm3d, 3, "tritonconv.conv2d_input_grad.default"),
}


@needs_runtime_loops
@pytest.mark.parametrize("kind", list(FUSED_BLOCKS))
def test_a_fused_patched_block_compiles_to_tritonconv_s_op_and_torch_s_epilogue(kind):
    """conv-BN-ReLU (ConvTranspose-BN-ReLU) fused by `patch(fuse=True)`: under compile the BatchNorm
    stays folded into the op's weights and Inductor computes the activation; eval-mode values are
    the unfused block's."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    conv, norm, rank, op = FUSED_BLOCKS[kind]
    reference = nn.Sequential(conv(3, 4, 3, padding=1), norm(4), nn.ReLU()).eval()
    reference[1].running_mean.uniform_(-1, 1)
    reference[1].running_var.uniform_(0.5, 2)
    model = copy.deepcopy(reference)
    assert len(tritonconv.patch(model, fuse=True).fused) == 1
    graphs = []

    def inductor(graph_module, example_inputs):
        graphs.append(graph_module.graph)
        return compile_fx(graph_module, example_inputs)

    x = torch.randn(2, 3, *[5] * rank)
    torch.testing.assert_close(torch.compile(model, backend=inductor)(x), reference(x), **TOLERANCE)
    found = set().union(*map(_convolutions, graphs))
    assert found == {op}, found
    assert not any("batch_norm" in str(node.target) for graph in graphs for node in graph.nodes)


def test_a_call_a_compiled_graph_gives_to_torch_is_counted_once_per_compilation_without_a_graph_break():
    """The fallback counter runs at trace time only (marked as a constant result without importing
    torch._dynamo at `import tritonconv`): with fullgraph=True any break in it would raise."""
    weight = torch.randn(3, 2, 3, 3, dtype=torch.complex64)  # a dtype tritonconv leaves to torch
    x = torch.randn(1, 2, 5, 5, dtype=torch.complex64)
    expected = torch.nn.functional.conv2d(x, weight, padding=1)
    tritonconv.patch_torch()
    try:
        compiled = torch.compile(lambda x: torch.nn.functional.conv2d(x, weight, padding=1), backend="aot_eager",
                                 fullgraph=True)  # fmt: skip
        tritonconv.reset_stats()
        for _ in range(3):
            torch.testing.assert_close(compiled(x), expected)
    finally:
        tritonconv.unpatch_torch()
    counts = tritonconv.stats()["conv2d"]
    assert counts["tritonconv"] == 0 and counts["torch"] == 1, counts
    (reason,) = counts["fallbacks"]
    assert "complex64" in reason and "once per compilation" in reason
