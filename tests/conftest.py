"""Test set-up: the Triton interpreter where there is no GPU, poisoned outputs everywhere, and an
empty tuning cache of the session's own (a user's tuned configs must not change what tests run).

The environment variables must be set before `triton` or `tritonconv` is imported: Triton picks
the interpreter when a kernel is decorated.
"""

import os
import tempfile
import zlib

import pytest
import torch
from hypothesis import settings

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ["TRITON_INTERPRET"] = "1"
os.environ["TRITONCONV_POISON_OUTPUTS"] = "1"
os.environ["TRITONCONV_CACHE_DIR"] = tempfile.mkdtemp(prefix="tritonconv-test-cache-")
os.environ["TRITONCONV_AUTOTUNE"] = "cached"

# CI replays the same examples run to run, so a red build is reproducible; locally they vary.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def seeded_random(request):
    """Each test's random inputs come from a seed of its own (its id's CRC), whatever ran before it on
    its xdist worker: `make test` shares tests out as workers free up, so the order varies run to run."""
    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture
def device() -> str:
    """Where the kernels under test run: the GPU when there is one, else the interpreter on CPU."""
    return "cuda" if HAS_CUDA else "cpu"


@pytest.fixture
def restore_tf32():
    """Let a test flip torch's TF32 switches and put them back afterwards."""
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
