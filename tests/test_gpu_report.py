"""`make gpu-report`: the quick run's engine with the report's command stages after a-d; stages that fit
the budget run, the next invocation resumes, a failed stage runs again, a code change redoes them."""

import pytest

from tritonconv.tools.bench.quick import context, plan, report


@pytest.fixture
def report_run(tmp_path, monkeypatch):
    monkeypatch.setenv("TRITONCONV_CACHE_DIR", str(tmp_path / "tables"))
    (tmp_path / "reports").mkdir()
    return plan.quick_run("h100", tmp_path / "reports", tmp_path / "tables" / "h100.json", context.rehearsal_timers(),
                          600, gpu=False, report=True, more_suites=("ssm", "mobilenetv2"))  # fmt: skip


def test_the_report_is_the_quick_run_then_every_command_stage(report_run):
    names = [stage.name for stage in plan.stages(report_run)]
    quick = [stage.name for stage in plan.stages(context.QuickRun(**{**vars(report_run), "report": False}))]
    assert names[: len(quick)] == quick, "the report starts with the quick run's stages, in order"
    extra = names[len(quick) :]
    assert extra[:3] == ["e gpu tests", "e profile resnet50", "e static vs driver"]
    for suite in ("resnet50", "ssm", "mobilenetv2"):
        assert f"e inductor {suite}" in extra and f"e fp16 {suite}" in extra
    stages = {stage.name: stage for stage in plan.stages(report_run)}
    assert all(stage.optional and not stage.up_front for name, stage in stages.items() if name.startswith("e "))
    assert stages["e gpu tests"].seconds(stages["e gpu tests"].counts(report_run)) == report.COMMAND_LIMIT_S


def test_command_stages_resume_rerun_when_failed_and_redo_on_a_code_change(report_run, tmp_path, monkeypatch):
    log = tmp_path / "ran.txt"

    def stage(name: str, seconds: float = 0.0, code: int = 0) -> plan.Stage:
        script = f"import time; time.sleep({seconds}); open({str(log)!r}, 'a').write({name!r} + '\\n'); exit({code})"
        argv = ("-c", script)
        return plan.Stage(name, (), lambda r: report.command(r, argv, 10), lambda r: [], lambda r: {"limit s": 10},
                          lambda counts: counts["limit s"], up_front=False, optional=True)  # fmt: skip

    monkeypatch.setattr(report, "ROOT", tmp_path)
    monkeypatch.setattr(plan, "code_version", lambda: "v1")
    monkeypatch.setattr(report, "command", _script_command(report.command))
    stages = [stage("a"), stage("b", seconds=3), stage("c"), stage("broken", code=3)]

    def ran() -> list[str]:
        return log.read_text().split() if log.exists() else []

    # An optional stage starts only while its estimate (its 10 s limit) fits: a and b, then 12 s minus b's 3 is short.
    report_run.deadline = context.time.monotonic() + 12
    assert plan.execute(report_run, stages, capability=None) == 0
    assert ran() == ["a", "b"]
    report_run.deadline = float("inf")
    assert plan.execute(report_run, stages, capability=None) == 1  # `broken` exits 3
    assert ran() == ["a", "b", "c", "broken"], "done stages are skipped, the rest run once each"
    state = plan.read_state(report_run.reports / plan.STATE_FILE)
    assert state["a"]["status"] == "done" and state["broken"]["status"].startswith("failed")
    plan.execute(report_run, stages, capability=None)
    assert ran()[4:] == ["broken"], "only the failed stage runs again"
    monkeypatch.setattr(plan, "code_version", lambda: "v2")
    plan.execute(report_run, stages, capability=None)
    assert ran()[5:] == ["a", "b", "c", "broken"], "a new code version redoes every stage"


def _script_command(command):
    """`report.command` with `python ARGV` (a script) instead of `python -m ARGV` (a module)."""

    def run_script(run, argv, limit_s, env=None):
        real = report.subprocess.run

        def without_m(arguments, **options):
            return real([arguments[0], *arguments[2:]], **options)

        report.subprocess.run = without_m
        try:
            return command(run, argv, limit_s, env)
        finally:
            report.subprocess.run = real

    return run_script
