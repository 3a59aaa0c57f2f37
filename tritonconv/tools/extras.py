"""What a command needs beyond torch and Triton, said in one line where it is missing."""

from __future__ import annotations

import importlib.util

REPORTS = ("pandas", "matplotlib", "tabulate")  # tables, plots, Markdown summaries (tqdm, the bar, is optional)
REPORTS_INSTALL = "pip install 'tritonconv[reports]'"


def require_reports(what: str) -> None:
    """Raise ImportError naming the extra to install when the reporting libraries are missing."""
    missing = [name for name in REPORTS if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(f"{what} needs the reports extra ({', '.join(missing)} not installed): {REPORTS_INSTALL}")
