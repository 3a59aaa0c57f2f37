"""`tritonconv bench` and `tritonconv compare` end to end on the CPU (through the interpreter).

The times mean nothing here; what is checked is the report: every column the issue names, finite
values, errors within tolerance, the plot and the summary, and a compare that reads them back.
"""

import math
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest
from conv_reference import loops_to_runtime_bounds

from tritonconv.problem.suites import suites_folder
from tritonconv.tools.bench.compare import compare

# The module's one bench run (`report`) serves every test here: keep them on one xdist worker.
pytestmark = pytest.mark.xdist_group("bench_report")

REQUIRED_COLUMNS = [
    "suite", "layer", "pass", "n", "c", "h", "w", "k", "r", "s", "stride_h", "stride_w", "pad_h", "pad_w", "dil_h",
    "dil_w", "groups", "p", "q", "dtype", "layout", "variant", "config", "triton_ms", "torch_ms", "speedup",
    "triton_tflops", "torch_tflops", "triton_gbps", "roofline_ms", "roofline_pct", "max_rel_err", "device",
    "torch_version", "triton_version", "timestamp",
]  # fmt: skip
NUMERIC = ["triton_ms", "torch_ms", "speedup", "triton_tflops", "torch_tflops", "triton_gbps", "roofline_ms",
           "roofline_pct", "max_rel_err"]  # fmt: skip


# The smoke suite's 2-D layers of the four forward routes (its 3-D layers: `test_a_3d_suite_benches_and_compares`).
SUITE_LAYERS = ("3x3 pad 1", "1x1", "grouped g=4", "depthwise 3x3")


def bench(tmp_path, *args):
    env = {**os.environ, "TRITONCONV_CACHE_DIR": str(tmp_path / "cache")}
    smoke = (suites_folder() / "smoke.csv").read_text().splitlines()
    suite = tmp_path / "smoke.csv"
    kept = [line for line in smoke if line.startswith(("#", "layer,")) or line.split(",")[0] in SUITE_LAYERS]
    suite.write_text("\n".join(kept) + "\n")
    command = [sys.executable, "-m", "tritonconv", "bench", "--suite", str(suite), "--out", str(tmp_path / "x.csv")]
    result = subprocess.run([*command, *args], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("bench")
    passes = "fwd,dgrad,wgrad" if loops_to_runtime_bounds() else "fwd"  # old interpreters: no backward
    result = bench(tmp_path, "--pass", passes, "--dtype", "float32,bfloat16")
    return tmp_path, result, pd.read_csv(tmp_path / "x.csv"), passes.split(",")


def test_the_csv_has_every_column_finite_values_and_small_errors(report):
    _, _, table, passes = report
    assert [column for column in REQUIRED_COLUMNS if column not in table.columns] == []
    assert len(table) == len(SUITE_LAYERS) * len(passes) * 2 and set(table["pass"]) == set(passes)
    assert set(table["layer"]) == set(SUITE_LAYERS) and set(table["suite"]) == {"smoke"}
    assert table[NUMERIC].map(math.isfinite).all().all()
    assert (table[["triton_ms", "torch_ms", "roofline_ms"]] > 0).all().all()
    assert table["correct"].all() and table["max_rel_err"].max() < 5e-2
    assert set(table["variant"]) >= {"implicit_gemm", "conv1x1", "grouped_tile", "depthwise"}
    assert table["device"].str.contains("interpreter").all()


def test_the_plot_and_the_summary_are_written_and_printed(report):
    tmp_path, result, _, _ = report
    png = (tmp_path / "x.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    summary = (tmp_path / "x.md").read_text()
    assert "geomean speedup" in summary and "weighted by count" in summary and "measured peaks" in summary
    assert summary.count("| smoke") == 0 and summary.count("\n| fwd") == 2  # one row per dtype
    assert "Every result matched torch's" in summary
    assert summary.splitlines()[0] in result.stdout and "wrote " in result.stdout


def test_compare_reads_two_reports(report, tmp_path):
    directory, _, table, _ = report
    slower = table.copy()
    slower.loc[0, "triton_ms"] *= 2
    slower.loc[1, "triton_ms"] /= 2
    slower.to_csv(tmp_path / "new.csv", index=False)
    joined, text = compare(directory / "x.csv", tmp_path / "new.csv")
    assert list(joined["verdict"]).count("slower") == 1 and list(joined["verdict"]).count("faster") == 1
    assert f"{len(table)} rows: 1 faster, 1 slower, {len(table) - 2} unchanged" in text
    printed = subprocess.run(
        [sys.executable, "-m", "tritonconv", "compare", str(directory / "x.csv"), str(tmp_path / "new.csv")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert printed.returncode == 1 and "1 faster, 1 slower" in printed.stdout  # a slower row fails the compare


@pytest.mark.skipif(shutil.which("g++") is None, reason="Inductor on the CPU needs a C++ compiler")
def test_the_inductor_baseline_on_a_suite_of_ones_own(tmp_path):
    """A user's CSV suite, by path, against torch and Inductor: each compiles before it is timed,
    and the inductor columns land in the CSV and the summary."""
    suite = tmp_path / "mine.csv"
    suite.write_text(
        "# one layer\nlayer,count,n,c,h,w,k,r,s,stride_h,stride_w,pad_h,pad_w,dil_h,dil_w,groups\n"
        "3x3,2,1,4,5,5,8,3,3,1,1,1,1,1,1,1\n"
    )
    env = {**os.environ, "TRITONCONV_CACHE_DIR": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "tritonconv", "bench", "--suite", str(suite), "--pass", "fwd",
               "--dtype", "float32", "--baseline", "torch,inductor", "--out", str(tmp_path / "y.csv")]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(tmp_path / "y.csv")
    assert table["suite"].tolist() == ["mine"] and table["count"].tolist() == [2]
    assert table[["inductor_ms", "inductor_speedup"]].map(math.isfinite).all().all()
    assert "vs inductor" in (tmp_path / "y.md").read_text()


VIDEO_SUITE = """# three 3-D layers, the way the video suite writes them
layer,count,n,c,d,h,w,k,t,r,s,stride_d,stride_h,stride_w,pad_d,pad_h,pad_w,dil_d,dil_h,dil_w,groups
spatial 1x3x3,2,1,8,3,6,6,8,1,3,3,1,1,1,0,1,1,1,1,1,1
temporal 3x1x1 s2,1,1,8,4,5,5,16,3,1,1,2,1,1,1,0,0,1,1,1,1
3x3x3,1,1,8,3,4,4,8,3,3,3,1,1,1,1,1,1,1,1,1,1
"""


def test_a_3d_suite_benches_and_compares(tmp_path):
    """Every pass of 3-D layers against torch's conv3d, the depth axis in its own columns, and a
    compare that matches rows on it. The two (2+1)D layers run (and are timed) as the 2-D
    convolutions on views that conv3d runs them as; the 3x3x3 one on the 3-D kernels."""
    suite = tmp_path / "tiny_video.csv"
    suite.write_text(VIDEO_SUITE)
    env = {**os.environ, "TRITONCONV_CACHE_DIR": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "tritonconv", "bench", "--suite", str(suite), "--out", str(tmp_path / "v.csv")]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(tmp_path / "v.csv")
    assert list(table["pass"]) == ["fwd", "dgrad", "wgrad"] * 3 and table["correct"].all()
    assert set(table["variant"][:6]) <= {"implicit_gemm", "stride_phased", "conv1x1"}
    assert set(table["variant"][6:]) == {"implicit_gemm_3d"}
    assert list(table[["d", "t", "stride_d", "o"]].iloc[5]) == [4, 3, 2, 2]
    joined, _ = compare(tmp_path / "v.csv", tmp_path / "v.csv")
    assert len(joined) == 9 and "t" in joined.columns
