"""The architecture table: a real device's entry from torch's properties, NVIDIA and ROCm alike."""

import types

import pytest
import torch

from tritonconv.problem import devices
from tritonconv.problem.devices import ARCHES, arch_for_capability, arch_of


def _fake_gpu(monkeypatch, hip: str | None, capability: tuple[int, int], **properties) -> None:
    monkeypatch.setattr(torch.version, "hip", hip)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: types.SimpleNamespace(**properties))


@pytest.mark.parametrize(
    ("gcn", "expected"), [("gfx942:sramecc+:xnack-", "gfx942"), ("gfx950", "gfx950")], ids=["mi300x", "mi355x"]
)
def test_a_rocm_device_is_named_by_its_gcn_arch_and_gets_its_lds(monkeypatch, gcn, expected):
    # ROCm's torch reports a CUDA-like capability (9.4 for an MI300X): it must not be taken for Hopper.
    _fake_gpu(monkeypatch, "6.4", (9, 4), gcnArchName=gcn, multi_processor_count=304,
              shared_memory_per_block_optin=ARCHES[expected].shared_memory)  # fmt: skip
    arch = arch_of(torch.device("cuda", 0))
    assert arch.name == expected and arch.is_amd and not arch.tma and arch.warp_size == 64
    assert arch.shared_memory == ARCHES[expected].shared_memory and arch.multiprocessors == 304


def test_an_nvidia_device_is_named_by_its_capability(monkeypatch):
    _fake_gpu(monkeypatch, None, (9, 0), multi_processor_count=132, shared_memory_per_block_optin=232448)
    arch = arch_of(torch.device("cuda", 0))
    assert (arch.name, arch.tma, arch.matrix_instruction) == ("sm90", True, "wgmma")
    assert arch_for_capability((8, 0)).name == "sm80" and not arch_for_capability((8, 0)).tma
    assert arch_for_capability((10, 0)) is ARCHES["sm100"]


def test_amd_occupancy_follows_vgprs():
    mi300x = devices.ARCHES["gfx942"]
    assert [mi300x.waves_per_simd(vgprs) for vgprs in (32, 64, 65, 128, 256, 512)] == [8, 8, 7, 4, 2, 1]
