"""The tuning cache on disk: human-readable JSON, safe under concurrent writers, never fatal.

One file per device (`<TRITONCONV_CACHE_DIR>/<device>.json`, default `~/.cache/tritonconv`), mapping a
readable problem key to its tuned entry. Each entry carries the fingerprint it was tuned under
(Triton and tritonconv versions, a hash of the kernel source and of the config space), and a lookup
whose fingerprint differs misses: a kernel change retunes that kernel's shapes and nothing else.

Writers take an exclusive lock on `<file>.lock`, re-read the file, merge their entries in and
replace the file atomically (write a temporary file, fsync, rename), so two processes tuning at once
both land and a reader never sees half a file. A file that does not parse (truncated by a crash,
edited by hand) is reported once, moved aside to `<file>.corrupt`, and rebuilt by the next write.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from ..problem.arithmetic import ConvProblem

CACHE_ENV = "TRITONCONV_CACHE_DIR"
FORMAT = 1
_reported: set[Path] = set()
_generation = 0


def generation() -> int:
    """A number that changes whenever a cache entry is stored in this process (or `bump_generation`
    is called): plans and prepared calls are keyed by it, so none outlives the entries it was read from."""
    return _generation


def bump_generation() -> None:
    global _generation
    _generation += 1


def cache_dir() -> Path:
    """TRITONCONV_CACHE_DIR, else the user's cache directory (XDG_CACHE_HOME or ~/.cache) / tritonconv."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tritonconv"


def problem_key(problem: ConvProblem, pass_name: str, tf32: bool) -> str:
    """Everything that changes which config is fastest, readable at a glance in the JSON."""
    dtype = str(problem.dtype).removeprefix("torch.")
    depth = problem.depth
    if depth is None:
        sizes = f"n{problem.n} c{problem.c} h{problem.h} w{problem.w} k{problem.k} r{problem.r} s{problem.s}"
        stride, dilation = "x".join(map(str, problem.stride)), "x".join(map(str, problem.dilation))
        begin, end = problem.padding, problem.padding_end
    else:  # a 3-D problem: depth first on every axis
        sizes = (f"n{problem.n} c{problem.c} d{problem.d} h{problem.h} w{problem.w} k{problem.k} t{problem.t} "
                 f"r{problem.r} s{problem.s}")  # fmt: skip
        stride = "x".join(map(str, (depth.stride, *problem.stride)))
        dilation = "x".join(map(str, (depth.dilation, *problem.dilation)))
        begin, end = (depth.padding, *problem.padding), (depth.padding_end, *problem.padding_end)
    pad = "x".join(map(str, begin)) + "+" + "x".join(map(str, end))
    return (
        f"{pass_name} {sizes} stride{stride} pad{pad} dil{dilation} "
        f"g{problem.groups} {dtype} {problem.layout} tf32={int(tf32 and problem.dtype == torch.float32)}"
    )


class TuningCache:
    """Entries of one cache file; `lookup` reads, `store` merges under the lock."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._entries: dict[str, dict] | None = None
        self._stamp: tuple[int, int] | None = None

    def lookup(self, key: str, fingerprint: Mapping[str, str]) -> dict | None:
        """The entry for `key` if it was tuned under `fingerprint`, else None."""
        entry = self.entries().get(key)
        if entry is None or entry.get("fingerprint") != dict(fingerprint):
            return None
        return entry

    def entries(self) -> dict[str, dict]:
        """All entries, re-read when the file changed since the last read."""
        stamp = self._file_stamp()
        if self._entries is None or stamp != self._stamp:
            self._entries, self._stamp = self._read(), stamp
        return self._entries

    def store(self, new_entries: Mapping[str, dict]) -> None:
        """Merge `new_entries` into the file, atomically and without losing a concurrent writer's."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked():
            merged = self._read(move_aside=True)
            merged.update(new_entries)
            self._write(merged)
            self._entries, self._stamp = merged, self._file_stamp()
        bump_generation()

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            status = self.path.stat()
        except FileNotFoundError:
            return None
        return status.st_mtime_ns, status.st_size

    def _read(self, move_aside: bool = False) -> dict[str, dict]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {}
        try:
            document = json.loads(text)
            if not isinstance(document, dict) or document.get("format") != FORMAT:
                raise ValueError(f"not a tritonconv cache of format {FORMAT}")
            entries = document["entries"]
            if not isinstance(entries, dict):
                raise ValueError("'entries' is not an object")
            return entries
        except (ValueError, KeyError) as error:
            if self.path not in _reported:
                _reported.add(self.path)
                warnings.warn(
                    f"tritonconv: tuning cache {self.path} is unreadable ({error}); it is set aside as "
                    f"{self.path.name}.corrupt and rebuilt",
                    RuntimeWarning,
                    stacklevel=3,
                )
            if move_aside:
                os.replace(self.path, self.path.with_name(self.path.name + ".corrupt"))
            return {}

    def _write(self, entries: dict[str, dict]) -> None:
        document = {"format": FORMAT, "entries": dict(sorted(entries.items()))}
        handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
        try:
            with os.fdopen(handle, "w") as file:
                json.dump(document, file, indent=1)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.path.with_name(self.path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
