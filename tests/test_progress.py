"""The progress of `tune` and `bench`: tqdm's bar on a terminal, with an estimate over the whole run
(its default moving average under-estimated the time left about 4x when steps differ in length), and
a line per step where tqdm (the reports extra) is not installed."""

import io
import sys

from tritonconv.tools.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_bar_estimates_from_the_whole_run():
    progress = Progress("tune", Terminal())
    progress(0, 4, "first")
    assert progress._bar.smoothing == 0
    progress(4, 4, "done")


def test_without_tqdm_a_terminal_gets_a_line_per_step(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm raises ImportError
    stream = Terminal()
    progress = Progress("tune", stream)
    for done in range(3):
        progress(done, 3, f"step {done}")
    progress(3, 3, "")
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("tune: 1/3 step 0") and lines[-1].startswith("tune: 3/3 done in")
