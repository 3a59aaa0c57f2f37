"""`make gpu-report`: steps that fit a 10-minute command, run until the budget is spent, resumed by the
next invocation, and redone when the code changes."""

import sys

from tritonconv.tools import gpu_report


def test_the_plan_covers_every_suite_and_pass_in_steps_under_nine_minutes():
    plan = gpu_report.steps("h100")
    names = [step.name for step in plan]
    assert names[0] == "gpu tests"
    for suite in gpu_report.SUITES:
        for pass_name in gpu_report.PASSES:
            assert f"tune {suite} {pass_name}" in names
        for dtype in gpu_report.DTYPES:
            assert f"bench {suite} {dtype}" in names
    assert {"host time resnet50", "profile resnet50", "static vs driver"} <= set(names)
    assert all(step.limit_s < 9 * 60 + 1 for step in plan)
    tuning = [step for step in plan if step.name.startswith("tune")]
    assert all(dict(step.env)["TRITONCONV_CACHE_DIR"].endswith("autotune") for step in tuning)
    assert all("reports/h100/" in " ".join(step.command) for step in plan if step.name.startswith("bench"))


def test_steps_resume_where_the_last_run_stopped_and_rerun_when_the_code_changes(tmp_path, monkeypatch, capsys):
    log = tmp_path / "ran.txt"

    def step(name: str, seconds: float = 0.0, code: int = 0) -> gpu_report.Step:
        script = f"import time; time.sleep({seconds}); open({str(log)!r}, 'a').write({name!r} + '\\n'); exit({code})"
        return gpu_report.Step(name, (sys.executable, "-c", script), limit_s=10)

    plan = [step("a"), step("b", seconds=3), step("c"), step("broken", code=3)]
    monkeypatch.setattr(gpu_report, "ROOT", tmp_path)
    monkeypatch.setattr(gpu_report, "steps", lambda device: plan)
    monkeypatch.setattr(gpu_report, "code_version", lambda: "v1")

    def ran() -> list[str]:
        return log.read_text().split() if log.exists() else []

    assert gpu_report.run("gpu", budget_s=0, dry_run=True) == 0 and ran() == []
    assert "a" in capsys.readouterr().out
    # A step starts only with its whole limit (10 s) left: b starts (a takes well under 2 s), and after
    # b's 3 s, 12 s minus that is not enough for c.
    assert gpu_report.run("gpu", budget_s=12) == 0
    assert ran() == ["a", "b"]
    assert "2 steps left" in capsys.readouterr().out
    assert gpu_report.run("gpu", budget_s=600) == 1  # `broken` fails: a non-zero exit
    assert ran() == ["a", "b", "c", "broken"], "done steps are skipped, the rest run once each"
    state = gpu_report.load_state("gpu")
    assert state["a"]["status"] == "done" and state["broken"]["status"] == "failed"
    gpu_report.run("gpu", budget_s=600)
    assert ran() == ["a", "b", "c", "broken", "broken"], "only the failed step runs again"
    monkeypatch.setattr(gpu_report, "code_version", lambda: "v2")
    gpu_report.run("gpu", budget_s=600)
    assert ran()[5:] == ["a", "b", "c", "broken"], "a new code version redoes every step"
