"""`import tritonconv` stays light: it imports neither torch._dynamo (about 1.3 s here) nor the
reporting extra's pandas, matplotlib or tqdm, nor Triton until a kernel is first used, and its own
time on top of `import torch` is at most a quarter of torch's (`python -m tritonconv.tools.import_cost`)."""

import json
import os
import subprocess
import sys

from tritonconv.tools import import_cost

HEAVY = import_cost.HEAVY


def _fresh(code: str) -> str:
    environment = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env=environment).stdout  # fmt: skip


def test_import_tritonconv_imports_no_dynamo_no_reporting_library_and_no_triton_yet():
    """And costs at most a quarter of `import torch` on top of it (0.12 here on 2026-12-05: Triton
    itself, about 0.3 of torch, loads with the first kernel)."""
    result = import_cost.measure(runs=3)
    assert result["heavy"] == [], f"import tritonconv imported {result['heavy']}"
    assert result["ratio"] <= 0.25, result


def test_the_cli_version_and_help_import_no_dynamo_and_no_reporting_library():
    for arguments in ("['--version']", "['--help']"):
        code = (
            "import sys, json, contextlib, io; import torch; before = set(sys.modules)\n"
            "from tritonconv.tools import cli\n"
            f"with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    try: cli.main({arguments})\n"
            "    except SystemExit: pass\n"
            "print(json.dumps(sorted(set(sys.modules) - before)))"
        )
        added = json.loads(_fresh(code))
        heavy = [name for name in added if name.split(".")[0] in HEAVY or name.startswith("torch._dynamo")]
        assert not heavy, f"tritonconv {arguments} imported {sorted({name.split('.')[0] for name in heavy})}"
