"""What `import tritonconv` costs on top of `import torch`, as a ratio of torch's own import time,
in fresh interpreters (the median of `--runs`), and which heavy modules it pulls in.

Usage: python -m tritonconv.tools.import_cost [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

HEAVY = ("torch._dynamo", "pandas", "matplotlib", "tqdm", "triton")  # triton: its kernels load on first use
_PROBE = """
import json, sys, time
start = time.perf_counter()
import torch
middle = time.perf_counter()
before = set(sys.modules)
import tritonconv
end = time.perf_counter()
added = set(sys.modules) - before
heavy = sorted(name for name in {HEAVY!r} if name in added)
print(json.dumps({{"torch_s": middle - start, "tritonconv_s": end - middle, "heavy": heavy}}))
"""


def measure(runs: int = 5) -> dict:
    """Medians over `runs` fresh interpreters: torch's import, tritonconv's on top, their ratio."""
    environment = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    command = [sys.executable, "-c", _PROBE.format(HEAVY=HEAVY)]
    samples = [
        json.loads(subprocess.run(command, capture_output=True, text=True, check=True, env=environment).stdout)
        for _ in range(runs)
    ]
    torch_s = statistics.median(sample["torch_s"] for sample in samples)
    ours_s = statistics.median(sample["tritonconv_s"] for sample in samples)
    heavy = sorted({name for sample in samples for name in sample["heavy"]})
    return {"runs": runs, "torch_s": torch_s, "tritonconv_s": ours_s, "ratio": ours_s / torch_s, "heavy": heavy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    result = measure(parser.parse_args().runs)
    print(f"import torch {result['torch_s']:.3f} s; import tritonconv on top {result['tritonconv_s']:.3f} s = "
          f"{result['ratio']:.2f} of torch's (median of {result['runs']} fresh interpreters); heavy modules it "
          f"imports: {', '.join(result['heavy']) or 'none'}")  # fmt: skip


if __name__ == "__main__":
    main()
