"""The command line's contract: exit 0 on success, 2 on a usage error, 1 on a failed run, each error
one line on stderr (no traceback unless --debug), checked before any long work starts."""

import io

import pandas as pd
import pytest

from tritonconv import cli
from tritonconv.bench.compare import KEY

USAGE_ERRORS = {
    "unknown suite (tune)": (["tune", "--suite", "nope"], "unknown suite 'nope'"),
    "unknown suite (bench)": (["bench", "--suite", "nope", "--out", "o.csv"], "unknown suite 'nope'"),
    "missing suite file": (["bench", "--suite", "missing.csv", "--out", "o.csv"], "no suite file 'missing.csv'"),
    "batch 0": (["tune", "--suite", "smoke", "--batch", "0"], "expected a positive integer; got '0'"),
    "batch -3": (["bench", "--suite", "smoke", "--batch", "-3", "--out", "o.csv"], "expected a positive integer"),
    "max-candidates 0": (["tune", "--suite", "smoke", "--max-candidates", "0"], "expected a positive integer"),
    "jobs 0": (["check-kernels", "--jobs", "0"], "expected a positive integer"),
    "negative noise": (["compare", "a.csv", "b.csv", "--noise", "-1"], "expected a number >= 0; got '-1'"),
    "unknown pass": (
        ["bench", "--suite", "smoke", "--pass", "fwd,bwd", "--out", "o.csv"],
        "expected a comma-separated",
    ),
}


@pytest.mark.parametrize("case", USAGE_ERRORS, ids=list(USAGE_ERRORS))
def test_usage_errors_exit_2_with_one_line(case, capsys):
    argv, message = USAGE_ERRORS[case]
    with pytest.raises(SystemExit) as exit:
        cli.main(argv)
    assert exit.value.code == 2
    error = capsys.readouterr().err
    assert message in error.splitlines()[-1] and "Traceback" not in error


def _report(path, rows=3, slower_by=1.0):
    table = pd.DataFrame([{**{column: 0 for column in KEY}, "suite": "s", "layer": f"l{i}", "pass": "fwd",
                           "dtype": "bfloat16", "layout": "channels_last", "variant": "implicit_gemm",
                           "triton_ms": 1.0 + i} for i in range(rows)])  # fmt: skip
    table.loc[0, "triton_ms"] *= slower_by
    table.to_csv(path, index=False)
    return path


def test_compare_exits_1_on_a_regression_and_0_on_identical_files(tmp_path, capsys):
    old = _report(tmp_path / "old.csv")
    assert cli.main(["compare", str(old), str(_report(tmp_path / "same.csv"))]) == 0
    assert "unchanged overall, within the noise band" in capsys.readouterr().out
    assert cli.main(["compare", str(old), str(_report(tmp_path / "slow.csv", slower_by=1.5))]) == 1
    assert "1 slower" in capsys.readouterr().out


BAD_FILES = {"missing": (None, "no such file"), "garbage": ("\x00\x01not,a\n\"csv", "not a bench"),
             "another csv": ("a,b\n1,2\n", "missing columns")}  # fmt: skip


@pytest.mark.parametrize("content, message", list(BAD_FILES.values()), ids=list(BAD_FILES))
def test_compare_on_a_bad_file_fails_with_one_line(content, message, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    if content is not None:
        bad.write_text(content)
    assert cli.main(["compare", str(_report(tmp_path / "old.csv")), str(bad)]) == 1
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1 and message in error and "Traceback" not in error
    with pytest.raises(ValueError):  # --debug: the exception itself, traceback and all
        cli.main(["--debug", "compare", str(_report(tmp_path / "old.csv")), str(bad)])


def test_compare_into_a_closed_pipe_is_quiet(tmp_path, monkeypatch):
    class ClosedPipe(io.StringIO):
        def write(self, text):
            raise BrokenPipeError

    monkeypatch.setattr("sys.stdout", ClosedPipe())
    old = _report(tmp_path / "old.csv")
    assert cli.main(["compare", str(old), str(old)]) == 0


def test_version(capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(["--version"])
    assert exit.value.code == 0 and capsys.readouterr().out.startswith("tritonconv ")


HEADER = "layer,count,n,c,h,w,k,r,s,stride_h,stride_w,pad_h,pad_w,dil_h,dil_w,groups\n"
BAD_SUITES = {
    "non-integer cell": ("a,1,2,8,6,6,16,3,3,1,1,1,1,1,1,1\nb,1,2,x8,6,6,16,3,3,1,1,1,1,1,1,1\n",
                         "row 2 (layer 'b'), column 'c': expected an integer, got 'x8'"),
    "short row": ("a,1,2,8,6,6\n", "row 1 (layer 'a'), column 'k'"),
    "kernel larger than input": ("a,1,2,8,3,3,16,5,5,1,1,0,0,1,1,1\n", "row 1 (layer 'a'): Calculated padded input"),
    "bad groups": ("a,1,2,8,6,6,16,3,3,1,1,1,1,1,1,3\n", "row 1 (layer 'a'): Given groups=3"),
    "negative padding": ("a,1,2,8,6,6,16,3,3,1,1,-1,1,1,1,1\n", "row 1 (layer 'a'): negative padding"),
    "no layers": ("", "no layers"),
    "missing column": (None, "missing columns"),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_SUITES, ids=list(BAD_SUITES))
def test_a_malformed_suite_fails_with_one_line_naming_the_row(case, tmp_path, capsys):
    rows, message = BAD_SUITES[case]
    suite = tmp_path / "bad.csv"
    suite.write_text("layer,count,n\na,1,2\n" if rows is None else HEADER + rows)
    assert cli.main(["tune", "--suite", str(suite)]) == 1
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1 and message in error and str(suite) in error, error


BAD_OUTPUTS = {
    "extension": ("report.txt", "expected a path ending in .csv"),
    "unwritable": ("/proc/r.csv", "cannot write"),
}


@pytest.mark.parametrize("out, message", list(BAD_OUTPUTS.values()), ids=list(BAD_OUTPUTS))
def test_a_bad_report_path_is_refused_before_the_benchmark_runs(out, message, capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(["bench", "--suite", "smoke", "--out", out])
    assert exit.value.code == 2 and message in capsys.readouterr().err
