"""Progress of a long command (`tune`, `bench`) on stderr, readable wherever it lands.

On a terminal it is tqdm's bar (where the reports extra installed it), with ETA and rate, redrawn in
place. Anywhere else (a log file, CI,
a pipe) a bar redrawn with carriage returns becomes one very long line, so each step gets a line of
its own instead: its number, what it is, the time so far and the estimate of what is left.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _interval(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:02d}:{seconds:02d}"


class Progress:
    """A progress callback, `progress(done, total, label)`: called before each step with the steps
    done and the label of the one starting, and once more with done == total when all are done."""

    def __init__(self, description: str, stream: TextIO | None = None):
        self.description = description
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty()
        self._bar = None
        self._start: float | None = None

    def __call__(self, done: int, total: int, label: str) -> None:
        if self._start is None:
            self._start = time.monotonic()
        if self.interactive:
            self._draw(done, total, label)
        else:
            self._log(done, total, label)

    def _draw(self, done: int, total: int, label: str) -> None:
        if self._bar is None:
            try:
                from tqdm import tqdm  # only a terminal needs it (the reports extra)
            except ImportError:
                self.interactive = False  # without tqdm: a line per step, as in a log
                self._log(done, total, label)
                return
            # smoothing=0: the rate is steps over the whole time so far. Steps differ by orders of magnitude
            # (a cached or pruned candidate against a timed one), and tqdm's default moving average of the
            # latest rates under-estimated the time left about 4x.
            self._bar = tqdm(total=total, desc=self.description, file=self.stream, unit="step", dynamic_ncols=True,
                             smoothing=0)  # fmt: skip
        self._bar.set_postfix_str(label[:60], refresh=False)
        self._bar.update(done - self._bar.n)
        if done >= total:
            self._bar.close()
            self._bar = None

    def _log(self, done: int, total: int, label: str) -> None:
        elapsed = time.monotonic() - self._start
        if done >= total:
            line = f"{self.description}: {total}/{total} done in {_interval(elapsed)}"
        else:
            left = f", about {_interval(elapsed / done * (total - done))} left" if done else ""
            line = f"{self.description}: {done + 1}/{total} {label} (elapsed {_interval(elapsed)}{left})"
        print(line, file=self.stream, flush=True)
