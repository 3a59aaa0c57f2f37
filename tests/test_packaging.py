"""What a wheel installs: every subpackage, and the autotune/ data as tritonconv.autotune."""

import tomllib
from pathlib import Path

from tritonconv.problem.suites import available_suites, load_suite

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_for_installation():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(path.parent.relative_to(ROOT).parts) for path in (ROOT / "tritonconv").rglob("__init__.py")} | {
        "tritonconv.autotune",
        "tritonconv.autotune.serving",
    }
    assert listed == on_disk


def test_smoke_suite_covers_every_variant():
    from tritonconv.plan.dispatch import choose_variant

    assert "smoke" in available_suites()
    variants = {choose_variant(layer.problem) for layer in load_suite("smoke")}
    assert variants == {"implicit_gemm", "conv1x1", "grouped_tile", "depthwise", "implicit_gemm_3d", "depthwise_3d",
                        "depthwise_1d"}  # fmt: skip
    assert {layer.problem.n for layer in load_suite("smoke", batch=3)} == {3}


def test_suite_errors_name_the_fix(tmp_path):
    import pytest

    with pytest.raises(ValueError, match=r"unknown suite 'nope'; known: convnext_t, decoders, mobilenetv2, .*smoke"):
        load_suite("nope")
    bad = tmp_path / "mine.csv"
    bad.write_text("layer,n,c\nx,1,2\n")
    with pytest.raises(ValueError, match="missing columns"):
        load_suite(str(bad))


def test_the_network_suites_load_with_their_layer_counts():
    """Every suite the benchmarks name is installed and parses; the counts are the networks' convs."""
    expected = {"resnet50": (23, 53), "resnext50_32x4d": (24, 53), "mobilenetv2": (16, 28), "convnext_t": (11, 37),
                "replknet31b": (4, 24)}  # fmt: skip
    for name, (layers, convolutions) in expected.items():
        suite = load_suite(name, batch=2)
        assert (len(suite), sum(layer.count for layer in suite)) == (layers, convolutions), name
        assert {layer.problem.n for layer in suite} == {2}
    resnext = {layer.name: layer.problem for layer in load_suite("resnext50_32x4d")}
    assert resnext["l3 grouped 3x3"].groups == 32 and resnext["l3 grouped 3x3"].c_per_group == 16


def test_the_serving_suite_loads_and_its_prefills_sum_to_their_tokens():
    from tritonconv.problem.serving import load_serving_suite

    cases = load_serving_suite("ssm")
    assert {case.kind for case in cases} == {"decode", "prefill"}
    assert {case.batch for case in cases if case.kind == "decode"} >= {1, 256}
    for case in cases:
        if case.kind == "prefill":
            lengths = case.lengths()
            assert sum(lengths) == case.tokens and len(lengths) == case.batch and min(lengths) > 0
