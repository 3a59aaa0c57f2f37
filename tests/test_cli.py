"""The command line's contract: exit 0 on success, 2 on a usage error, 1 on a failed run, each error
one line on stderr (no traceback unless --debug), checked before any long work starts."""

import io

import pandas as pd
import pytest

from tritonconv.tools import cli
from tritonconv.tools.bench import timing
from tritonconv.tools.bench.compare import KEY
from tritonconv.tools.progress import Progress

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
    "--model without a colon": (["tune", "--model", "torchvision.models.resnet50"], "expected MODULE:FACTORY"),
    "--model, missing module": (["tune", "--model", "no_such_module_x:build"], "cannot import 'no_such_module_x'"),
    "--model, missing factory": (
        ["tune", "--model", "torch.nn:no_such_factory"],
        "'torch.nn' has no 'no_such_factory'",
    ),
    "--model, not callable": (["tune", "--model", "math:pi"], "'math:pi' is not callable"),
    "--model without --input-shape": (["tune", "--model", "torch.nn:Identity"], "--model needs --input-shape"),
    "unknown compare format": (["compare", "a.csv", "b.csv", "--format", "html"], "invalid choice: 'html'"),
}


@pytest.mark.parametrize("case", USAGE_ERRORS, ids=list(USAGE_ERRORS))
def test_usage_errors_exit_2_with_one_line(case, capsys):
    argv, message = USAGE_ERRORS[case]
    with pytest.raises(SystemExit) as exit:
        cli.main(argv)
    assert exit.value.code == 2
    error = capsys.readouterr().err
    assert message in error.splitlines()[-1] and "Traceback" not in error


def _report(path, rows=3, slower_by=1.0, peak=100.0, device="cpu (Triton interpreter)"):
    table = pd.DataFrame([{**{column: 0 for column in KEY}, "suite": "s", "layer": f"l{i}", "pass": "fwd",
                           "dtype": "bfloat16", "layout": "channels_last", "variant": "implicit_gemm",
                           "triton_ms": 1.0 + i, "peak_tflops": peak, "peak_gbps": 50.0, "device": device}
                          for i in range(rows)])  # fmt: skip
    table.loc[0, "triton_ms"] *= slower_by
    table.to_csv(path, index=False)
    return path


def test_compare_refuses_runs_whose_machine_changed_under_them(tmp_path, capsys):
    """Two interpreter runs of the same code moved by -44% to +43% while the measured peak halved:
    compare says the machine changed (exit 3), not that the code regressed."""
    old = _report(tmp_path / "old.csv")
    halved = _report(tmp_path / "halved.csv", slower_by=1.43, peak=50.0)
    assert cli.main(["compare", str(old), str(halved)]) == 3
    out = capsys.readouterr().out
    assert "not compared: the machine's measured bfloat16 matmul TFLOP/s moved from 100 to 50" in out
    assert "slower" not in out and "not comparable" in out
    elsewhere = _report(tmp_path / "elsewhere.csv", device="nvidia-h100-sm90")
    assert cli.main(["compare", str(old), str(elsewhere)]) == 3
    assert "the device changed (cpu (Triton interpreter) -> nvidia-h100-sm90)" in capsys.readouterr().out
    steady = _report(tmp_path / "steady.csv", slower_by=1.5, peak=90.0)  # within PEAK_TOLERANCE: judged
    assert cli.main(["compare", str(old), str(steady)]) == 1


def test_compare_tables_show_the_layout_rows_are_matched_on(tmp_path, capsys):
    old, new = _report(tmp_path / "old.csv"), _report(tmp_path / "new.csv")
    for path in (old, new):  # the same layer in both layouts: two rows that must not look identical
        table = pd.read_csv(path)
        other = table.assign(layout="contiguous")
        pd.concat([table, other]).to_csv(path, index=False)
    for format in ("text", "md"):
        cli.main(["compare", str(old), str(new), "--format", format])
        lines = [line for line in capsys.readouterr().out.splitlines() if line.lstrip("| ").startswith("l0")]
        assert len(lines) == 2 and {"channels_last" in line for line in lines} == {True, False}
        assert any("contiguous" in line for line in lines)


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


def test_a_model_that_fails_on_its_input_fails_with_one_line(tmp_path, monkeypatch, capsys):
    """A 3-channel model given a 4-channel input: exit 1, torch's error with what was run, no traceback."""
    (tmp_path / "three_channels.py").write_text("import torch\n\ndef build():\n    return torch.nn.Conv2d(3, 8, 3)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRITONCONV_CACHE_DIR", str(tmp_path / "cache"))
    assert cli.main(["tune", "--model", "three_channels:build", "--input-shape", "1,4,8,8"]) == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "Traceback" not in error
    assert "--model three_channels:build on a bfloat16 channels_last input of shape (1, 4, 8, 8)" in error
    assert "expected input[1, 4, 8, 8] to have 3 channels, but got 4 channels instead" in error


def test_a_factory_that_returns_no_module_fails_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TRITONCONV_CACHE_DIR", str(tmp_path / "cache"))
    assert cli.main(["tune", "--model", "os:getcwd", "--input-shape", "1,3,8,8"]) == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "Traceback" not in error
    assert "--model os:getcwd returned a str, not a torch.nn.Module" in error


@pytest.mark.parametrize("command", ["compare", "check-kernels", "bench"])
def test_a_command_that_needs_the_reports_extra_says_which_to_install(command, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "pandas" else object())
    argv = {"compare": ["compare", "a.csv", "b.csv"], "check-kernels": ["check-kernels", "--suite", "smoke"],
            "bench": ["bench", "--suite", "smoke", "--out", str(tmp_path / "out.csv")]}[command]  # fmt: skip
    assert cli.main(argv) == 1
    error = capsys.readouterr().err.strip()
    assert error.splitlines() == [f"tritonconv {command}: error: this command needs the reports extra (pandas not "
                                  "installed): pip install 'tritonconv[reports]'"]  # fmt: skip


@pytest.mark.parametrize("command", ["tune", "bench", "check-kernels", "compare"])
def test_help_shows_every_choice_and_default(command, capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main([command, "--help"])
    assert exit.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    expected = {
        "tune": ["fwd, dgrad, wgrad", "(default: fwd)", "(bench times all three by default)", "(default: bfloat16)",
                 "(default: channels_last)"],
        "bench": ["fwd, dgrad, wgrad", "(default: fwd,dgrad,wgrad)", "(tune tunes fwd alone by default)",
                  "torch, inductor", "(default: torch)"],
        "check-kernels": ["(default: smoke,resnet50,video)", "(default: bfloat16,float16)", "(default: sm90)"],
        "compare": ["{text,md,csv}", "(default: text)", "(default: 0.05)"],
    }[command]  # fmt: skip
    for phrase in expected:
        assert phrase in text, phrase


@pytest.mark.parametrize("format", ["md", "csv"])
def test_compare_writes_markdown_and_csv(format, tmp_path, capsys):
    old, new = _report(tmp_path / "old.csv"), _report(tmp_path / "new.csv", slower_by=1.5)
    assert cli.main(["compare", str(old), str(new), "--format", format]) == 1
    out = capsys.readouterr().out
    if format == "md":
        lines = out.splitlines()
        assert lines[0] == "| layer | pass | dtype | layout | old ms | new ms | new/old | verdict |"
        assert lines[1].startswith("|---") and lines[-1].startswith("3 rows: 0 faster, 1 slower, 2 unchanged")
        assert "| l0 | fwd | bfloat16 | channels_last | 1.0000 | 1.5000 | 1.500 | slower |" in lines
    else:
        table = pd.read_csv(io.StringIO(out))
        assert list(table["layer"]) == ["l1", "l2", "l0"] and list(table["verdict"]) == ["unchanged"] * 2 + ["slower"]
        assert table.loc[2, "ratio"] == pytest.approx(1.5)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run_progress(stream) -> str:
    progress = Progress("tune", stream)
    for step in range(3):
        progress(step, 3, f"fwd layer{step}")
    progress(3, 3, "done")
    return stream.getvalue()


def test_progress_in_a_log_is_one_line_per_step():
    """Not a terminal (CI, a log file): a line per step with elapsed and estimated time, no carriage return."""
    lines = _run_progress(io.StringIO()).splitlines()
    assert "\r" not in "".join(lines) and len(lines) == 4
    assert lines[0].startswith("tune: 1/3 fwd layer0 (elapsed 00:00")
    assert "left)" in lines[1] and lines[-1].startswith("tune: 3/3 done in ")


def test_progress_on_a_terminal_is_a_tqdm_bar_with_rate():
    text = _run_progress(_Terminal())
    assert "\r" in text and "3/3" in text and "step/s" in text


def test_cpu_timings_are_medians_of_several_runs_after_a_warm_up():
    calls = []
    assert timing.cpu_median_ms(lambda: calls.append(1)) >= 0
    assert len(calls) >= 1 + timing.CPU_MIN_RUNS
