"""The GPU code path of the CUDA runner, driven through a fake CuPy.

No GPU here, so `runner._on_gpu` (copies, constant caching, the choice
between the fatbin and NVRTC, scratch and status on the device) would never
run before a session with a GPU. The fake module below stands in for CuPy:
device arrays are NumPy arrays with `.get()`, and a `RawModule`'s functions
launch through the host emulator, recording which way the module was made.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import lpcc
from lpcc import config
from lpcc.codegen.cuda import emu
from lpcc.models import MLP

pytestmark = pytest.mark.skipif(not emu.available(), reason="g++ is not installed")


class _DevArray(np.ndarray):
    def get(self) -> np.ndarray:
        return np.asarray(self).copy()


def _dev(a: np.ndarray) -> _DevArray:
    return np.array(a, copy=True).view(_DevArray)


class FakeCupy(types.ModuleType):
    """The parts of CuPy the runner uses, on the host."""

    uint8, int32 = np.uint8, np.int32

    def __init__(self, cc: str) -> None:
        super().__init__("cupy")
        self.made: list[str] = []  # "fatbin" or "nvrtc", per module
        self.uploads = 0
        fake = self

        class Device:
            compute_capability = cc

        class Runtime:
            @staticmethod
            def getDeviceCount() -> int:
                return 1

        class RawModule:
            def __init__(
                self,
                code: str | None = None,
                path: str | None = None,
                options: tuple = (),
            ) -> None:
                fake.made.append("nvrtc" if code is not None else "fatbin")
                if code is None:  # a fatbin file: its magic number
                    assert Path(path).read_bytes()[:4] == b"P\xedU\xba"
                self.code = code

            def get_function(self, entry: str) -> Any:
                return _Fn(fake, entry)

        self.cuda = types.SimpleNamespace(Device=Device, runtime=Runtime)
        self.RawModule = RawModule

    def asarray(self, a: np.ndarray) -> _DevArray:
        self.uploads += 1
        return _dev(a)

    def empty(self, shape: tuple, dtype: Any) -> _DevArray:
        return _dev(np.empty(shape, dtype))

    def zeros(self, shape: Any, dtype: Any) -> _DevArray:
        return _dev(np.zeros(shape, dtype))

    @staticmethod
    def asnumpy(a: _DevArray) -> np.ndarray:
        return np.asarray(a).copy()


class _Fn:
    def __init__(self, fake: FakeCupy, entry: str) -> None:
        self.fake, self.entry = fake, entry
        self.max_dynamic_shared_size_bytes = 0

    def __call__(self, grid: tuple, block: tuple, args: tuple, shared_mem: int = 0):
        source = self.fake.source  # set by the test: the kernel being run
        host = [int(a) if isinstance(a, np.integer) else np.asarray(a) for a in args]
        emu.emulate(source, self.entry, grid, block, host, shared_bytes=shared_mem)


@pytest.fixture
def fake_cupy(monkeypatch: pytest.MonkeyPatch) -> FakeCupy:
    fake = FakeCupy("86")  # an sm_86 GPU runs sm_80 cubins
    monkeypatch.setitem(sys.modules, "cupy", fake)
    return fake


def _model(archs: tuple[str, ...]) -> tuple[lpcc.CompiledModel, tuple]:
    model, xs = MLP(seed=0).eval(), (torch.randn(3, 16),)
    with config.override(cuda_archs=archs):
        cm = lpcc.compile(model, xs, quant="int4-g32", target="cuda")
    return cm, xs


def _patch_sources(fake: FakeCupy, monkeypatch: pytest.MonkeyPatch) -> None:
    """Route each fake launch to its kernel's source (the fake has one slot)."""
    from lpcc.codegen.cuda import runner

    real = runner._device_launch

    def launch(spec: Any) -> Any:
        inner = real(spec)

        def run(ins: list, outs: list, env: dict) -> Any:
            fake.source = spec.source
            return inner(ins, outs, env)

        return run

    monkeypatch.setattr(runner, "_device_launch", launch)


@pytest.mark.parametrize(("archs", "way"), [(("sm_80",), "fatbin"), ((), "nvrtc")])
def test_gpu_path_matches_emulation_and_picks_fatbin_or_nvrtc(
    fake_cupy: FakeCupy,
    monkeypatch: pytest.MonkeyPatch,
    archs: tuple[str, ...],
    way: str,
) -> None:
    cm, xs = _model(archs)
    _patch_sources(fake_cupy, monkeypatch)
    with torch.no_grad(), config.override(cuda_device="emulate"):
        want = cm(*xs).numpy()
    with torch.no_grad(), config.override(cuda_device="gpu"):
        got = cm(*xs).numpy()
        uploads = fake_cupy.uploads
        again = cm(*xs).numpy()
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(again, want)
    n_cuda = sum(k.target == "cuda" for k in cm.program.kernels)
    assert fake_cupy.made == [way] * n_cuda
    # constants go up once: the second call uploads only the activations
    consts = sum(
        len(k.meta["const_inputs"]) for k in cm.program.kernels if k.target == "cuda"
    )
    assert fake_cupy.uploads - uploads == uploads - consts


def test_a_gpu_of_another_major_version_compiles_with_nvrtc(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeCupy("75")  # sm_80/sm_90 cubins do not run on sm_75
    monkeypatch.setitem(sys.modules, "cupy", fake)
    cm, xs = _model(("sm_80",))
    _patch_sources(fake, monkeypatch)
    with torch.no_grad(), config.override(cuda_device="gpu"):
        cm(*xs)
    assert set(fake.made) == {"nvrtc"}
