"""Every Python example in the README and docs/ runs as written, on the CPU through the Triton
interpreter: a page's ```python blocks run in order in one fresh interpreter (later blocks use the
names earlier ones define), in a scratch folder with a scratch tuning cache."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def python_blocks(page: Path) -> list[str]:
    return BLOCK.findall(page.read_text())


def test_the_docs_build_strictly(tmp_path):
    """MkDocs with --strict: a broken link, anchor or a page missing from the navigation fails."""
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]


def test_a_broken_link_fails_the_strict_build(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# Home\n\n[gone](nowhere.md)\n")
    (tmp_path / "mkdocs.yml").write_text((ROOT / "mkdocs.yml").read_text().split("nav:")[0])
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=tmp_path, capture_output=True, text=True)  # fmt: skip
    assert result.returncode != 0 and "nowhere.md" in result.stderr


def test_the_docs_have_examples_to_run():
    assert sum(len(python_blocks(page)) for page in PAGES) >= 10


@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(p)], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_example_on_the_page_runs(page, tmp_path):
    script = "\n\n".join(python_blocks(page))
    environment = dict(os.environ, TRITON_INTERPRET="1", TRITONCONV_CACHE_DIR=str(tmp_path / "cache"),
                       PYTHONPATH=str(ROOT))  # fmt: skip
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                            env=environment, timeout=600)  # fmt: skip
    assert result.returncode == 0, f"{page.name}:\n{result.stderr[-3000:]}"
