"""The cuda target end to end, without a GPU: lowering, fatbins, saving, emulation.

Models compiled with target="cuda" run every kernel on lpcc's host emulator
(`LPCC_CUDA_DEVICE=emulate`: the same CUDA C, compiled by g++) and must match
the reference target (the NumPy interpreter, itself checked against torch
eager). Kernels reassociate float sums and the tensor-core path rounds
activations to f16, so outputs agree to a bound (below). Saved programs
carry a fatbin per kernel (nvcc, sm_80 + sm_90), checked with cuobjdump.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from lpcc.runtime import load, save
from lpcc.runtime.kernels import RuntimeDependencyError

import lpcc
from lpcc import config
from lpcc.codegen.cuda import emu, nvcc, nvrtc
from lpcc.codegen.cuda.runner import gpu_available
from lpcc.models import MLP, SmallCNN, TinyGPT2, TinyLlama

pytestmark = pytest.mark.skipif(not emu.available(), reason="g++ is not installed")

MODELS = {
    "mlp": (lambda: MLP(seed=0), lambda: (torch.randn(3, 16),)),
    "llama": (lambda: TinyLlama(seed=0), lambda: (torch.randint(0, 60, (1, 5)),)),
    "gpt2": (lambda: TinyGPT2(seed=0), lambda: (torch.randint(0, 60, (1, 5)),)),
    "cnn": (lambda: SmallCNN(seed=0), lambda: (torch.randn(2, 3, 8, 8),)),
}

# f32 kernels: eps * the longest reduction (K <= 256) * layers compounding,
# relative to the largest output (as the cpu target's tests).
REL = 2e-4


def _compile(name: str, quant: str | None, **kw: object) -> tuple:
    make, example = MODELS[name]
    torch.manual_seed(0)
    model = make().eval()
    xs = example()
    return model, xs, lpcc.compile(model, xs, quant=quant, target="cuda", **kw)


# The tensor-core path rounds activations to f16 (2**-11 relative), summed
# over K <= 256 products per output with f32 accumulation: the bound is the
# f16 rounding of x, relative to the largest output.
REL_TC = 2e-3


def _tensor_cores(cm: lpcc.CompiledModel) -> bool:
    return any("mma" in k.meta.get("note", "") for k in cm.program.kernels)


def _reference_kernels(cm: lpcc.CompiledModel) -> list[str]:
    return [k.meta.get("op", k.name) for k in cm.program.kernels if k.target != "cuda"]


def _close(a: torch.Tensor, b: torch.Tensor, rel: float = REL) -> None:
    scale = float(b.abs().max()) or 1.0
    err = float((a - b).abs().max())
    assert err <= rel * scale, f"max error {err:.3g} vs scale {scale:.3g}"


@pytest.mark.parametrize(
    ("name", "quant"),
    [
        ("mlp", None),
        ("mlp", "int4-g32"),
        ("llama", None),
        ("llama", "int4-g32"),
        ("llama", "uint3-g32"),
        ("llama", "int4-g32-a8"),
        ("gpt2", "int2-g32"),
        ("cnn", None),
    ],
)
def test_models_run_every_kernel_on_cuda_and_match_the_reference(
    name: str, quant: str | None
) -> None:
    with config.override(cuda_archs=()):  # fatbins: tested below, once
        model, xs, cm = _compile(name, quant)
    assert cm.program.target == "cuda"
    assert _reference_kernels(cm) == []
    # The reference target's rule picks the LUT kernel (int8 activation
    # tables); the cuda target's picks dequant: compare like with like.
    ref = lpcc.compile(
        model, xs, quant=quant, target="reference", kernels={"*": "dequant"}
    )
    with torch.no_grad(), config.override(cuda_device="emulate"):
        _close(cm(*xs), ref(*xs), REL_TC if _tensor_cores(cm) else REL)


@pytest.fixture(scope="module")
def saved_mlp(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    model, xs, cm = _compile("mlp", "int4-g32")
    path = tmp_path_factory.mktemp("cuda") / "mlp.lpcc"
    cm.save(path)
    return model, xs, cm, path


def test_saved_programs_carry_sm80_and_sm90_cubins(saved_mlp: tuple) -> None:
    _, _, cm, path = saved_mlp
    program = load(path)
    assert program.meta["archs"] == ["sm_80", "sm_90"]
    cuda = [k for k in program.kernels if k.target == "cuda"]
    assert cuda, "no CUDA kernels in the program"
    tool = nvcc.find_tool("cuobjdump")
    for k in cuda:
        assert k.binaries["fatbin"] == next(
            c.binaries["fatbin"] for c in cm.program.kernels if c.name == k.name
        )
        blob = Path(path).with_name(f"{k.name}.fatbin")
        blob.write_bytes(k.binaries["fatbin"])
        listing = subprocess.run(
            [tool, "--list-elf", str(blob)], capture_output=True, text=True, check=True
        ).stdout
        assert "sm_80" in listing and "sm_90" in listing, listing
        entries = [la["entry"] for la in k.meta["launches"]]
        sass = subprocess.run(
            [tool, "-sass", str(blob)], capture_output=True, text=True, check=True
        ).stdout
        for entry in entries:
            assert f"Function : {entry}" in sass


def test_a_loaded_program_runs_under_emulation(saved_mlp: tuple) -> None:
    _, xs, cm, path = saved_mlp
    loaded = lpcc.load(path)
    with torch.no_grad(), config.override(cuda_device="emulate"):
        np.testing.assert_array_equal(loaded(*xs).numpy(), cm(*xs).numpy())


@pytest.mark.skipif(gpu_available(), reason="this machine has a GPU")
def test_without_a_gpu_running_says_what_to_do(saved_mlp: tuple) -> None:
    _, xs, cm, _ = saved_mlp
    with (
        config.override(cuda_device="auto"),
        pytest.raises(RuntimeDependencyError) as info,
    ):
        cm(*xs)
    msg = str(info.value)
    assert "LPCC_CUDA_DEVICE=emulate" in msg and "target='cpu'" in msg, msg


def test_no_archs_means_cuda_c_only() -> None:
    with config.override(cuda_archs=()):
        _, _, cm = _compile("mlp", None)
    assert cm.program.meta["archs"] == []
    assert all(not k.binaries for k in cm.program.kernels)


def test_without_nvcc_the_program_carries_source_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def missing(name: str) -> str:
        raise nvcc.CudaToolNotFound(f"{name} not found (test)")

    monkeypatch.setattr(nvcc, "find_tool", missing)
    _, _, cm = _compile("mlp", None)
    cuda = [k for k in cm.program.kernels if k.target == "cuda"]
    assert cuda and all(not k.binaries and k.meta["archs"] == [] for k in cuda)


def test_bad_arch_knob_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LPCC_CUDA_ARCHS", "ampere")
    with pytest.raises(config.ConfigError, match=r"LPCC_CUDA_ARCHS.*sm_80"):
        config.get("cuda_archs")
    monkeypatch.setenv("LPCC_CUDA_ARCHS", "sm_86, sm_90")
    assert config.get("cuda_archs") == ("sm_86", "sm_90")
    monkeypatch.setenv("LPCC_CUDA_ARCHS", "none")
    assert config.get("cuda_archs") == ()


def test_dumps_hold_the_cuda_c(tmp_path: Path) -> None:
    with config.override(cuda_archs=()):
        _, _, cm = _compile("mlp", None, dump_ir=tmp_path)
    cus = sorted((tmp_path / "kernels").glob("*.cu"))
    names = {k.name for k in cm.program.kernels if k.target == "cuda"}
    assert {p.stem for p in cus} == names
    for p in cus:
        assert "__global__" in p.read_text()


def test_save_round_trips_kernel_binaries(tmp_path: Path) -> None:
    with config.override(cuda_archs=()):
        _, _, cm = _compile("mlp", None)
    program = cm.program
    program.kernels[0].binaries["extra"] = bytes(range(256)) * 3
    save(program, tmp_path / "p.lpcc")
    back = load(tmp_path / "p.lpcc")
    assert back.kernels[0].binaries == {"extra": bytes(range(256)) * 3}
    assert [k.source for k in back.kernels] == [k.source for k in program.kernels]


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
@pytest.mark.parametrize(
    ("name", "quant"),
    [("llama", "int4-g32"), ("llama", "int4-g32-a8"), ("cnn", None), ("gpt2", None)],
)
def test_every_kernel_of_the_models_compiles_with_nvcc_and_nvrtc(
    name: str, quant: str | None
) -> None:
    """Fatbins (nvcc, sm_80 + sm_90) and PTX from NVRTC, what CuPy compiles with."""
    _, _, cm = _compile(name, quant)
    cuda = [k for k in cm.program.kernels if k.target == "cuda"]
    assert cuda and all(k.binaries.get("fatbin") for k in cuda), name
    why = nvrtc.available()
    if why is not None:
        pytest.skip(f"NVRTC: {why}")
    for k in cuda:
        ptx = nvrtc.compile_ptx(k.source, "sm_80", name=f"{k.name}.cu")
        for la in k.meta["launches"]:
            assert f".entry {la['entry']}(" in ptx


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
def test_fatbins_are_cached_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = 'extern "C" __global__ void f(float* x) { x[threadIdx.x] += 1.0f; }\n'
    with config.override(cache_dir=str(tmp_path)):
        first = nvcc.cached_fatbin(src, ["sm_80"])
        (entry,) = (tmp_path / "cuda").glob("*.fatbin")
        assert entry.read_bytes() == first

        def no_nvcc(*args: object) -> bytes:
            raise AssertionError("compiled again")

        real = nvcc.compile_fatbin
        monkeypatch.setattr(nvcc, "compile_fatbin", no_nvcc)
        assert nvcc.cached_fatbin(src, ["sm_80"]) == first  # a hit
        entry.write_bytes(b"garbage")
        monkeypatch.setattr(nvcc, "compile_fatbin", real)
        assert nvcc.cached_fatbin(src, ["sm_80"]) == first  # corrupt: rebuilt
        assert entry.read_bytes() == first
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    with config.override(cache_dir=str(blocked)):
        assert nvcc.cached_fatbin(src, ["sm_80"]) == first  # unwritable: no error


def test_dynamic_batch_and_sequence_run_on_cuda() -> None:
    """One export with dynamic batch and sequence, run at two other sizes:
    every kernel (the attention's dense matmuls, the int4 group GEMMs, the
    norms) takes its sizes from the symbols at run time."""
    quant = "int4-g32"
    from torch.export import Dim

    from lpcc.models import LlamaConfig

    torch.manual_seed(0)
    model = TinyLlama(LlamaConfig(attention="explicit"), seed=5).eval()
    xs = (torch.randint(0, 60, (2, 5)),)
    dyn = {"ids": {0: Dim("batch", max=8), 1: Dim("seq", max=64)}}
    with config.override(cuda_archs=()):
        cm = lpcc.compile(model, xs, quant=quant, target="cuda", dynamic_shapes=dyn)
    assert _reference_kernels(cm) == []
    ref = lpcc.compile(
        model,
        xs,
        quant=quant,
        target="reference",
        dynamic_shapes=dyn,
        kernels={"*": "dequant"},
    )
    for shape in [(3, 9), (1, 2)]:
        ids = torch.randint(0, 60, shape)
        with torch.no_grad(), config.override(cuda_device="emulate"):
            _close(cm(ids), ref(ids))
