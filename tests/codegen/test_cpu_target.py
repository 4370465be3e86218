"""The cpu target end to end: lowering, mixed kernels, saving, loading.

Models compiled with target="cpu" must match the same models on the
reference target (the NumPy interpreter, itself checked against torch
eager); native kernels reassociate float sums (fast-math reductions, FMA),
so outputs agree to a bound set by f32 rounding over the longest reduction.
A saved cpu program is object code plus JSON: it loads and runs in a fresh
process without torch or xDSL when all its kernels are native.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from lpcc.runtime import VM, Kernel, load, save

import lpcc
from lpcc.codegen.llvm import isa as isa_mod
from lpcc.codegen.llvm.loader import CpuFeatureError
from lpcc.codegen.program import build_program
from lpcc.ir.dialect import parse_module
from lpcc.models import MLP, SmallCNN, TinyGPT2, TinyLlama

pytestmark = pytest.mark.skipif(
    isa_mod.host_arch() != "x86_64", reason="native kernels are built for x86-64"
)

# Bound for float outputs: f32 eps times the longest reduction (K <= 256 in
# these models) times a factor for the layers compounding, relative to the
# largest output.
REL = 2e-4


def _native_count(cm: lpcc.CompiledModel) -> int:
    return sum(k.target == "cpu" for k in cm.program.kernels)


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    scale = float(b.abs().max()) or 1.0
    err = float((a - b).abs().max())
    assert err <= REL * scale, f"max error {err:.3g} vs scale {scale:.3g}"


MODELS = {
    "mlp": (lambda: MLP(seed=0), lambda: (torch.randn(3, 16),)),
    "llama": (lambda: TinyLlama(seed=0), lambda: (torch.randint(0, 60, (1, 5)),)),
    "gpt2": (lambda: TinyGPT2(seed=0), lambda: (torch.randint(0, 60, (1, 5)),)),
    "cnn": (lambda: SmallCNN(seed=0), lambda: (torch.randn(2, 3, 16, 16),)),
}


@pytest.mark.parametrize("quant", [None, "int4-g32", "int2-g32", "uint3-g32"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_models_match_the_reference_target(name: str, quant: str | None) -> None:
    make, example = MODELS[name]
    torch.manual_seed(0)
    model = make().eval()
    xs = example()
    cpu = lpcc.compile(model, xs, quant=quant, target="cpu")
    ref = lpcc.compile(model, xs, quant=quant, target="reference")
    assert cpu.program.target == "cpu"
    assert cpu.program.meta["isa"] == isa_mod.selected_isa(to_run=True)
    with torch.no_grad():
        _close(cpu(*xs), ref(*xs))


def test_quantized_llama_runs_its_matmuls_natively() -> None:
    model = TinyLlama(seed=0).eval()
    x = torch.randint(0, 60, (1, 4))
    cm = lpcc.compile(model, (x,), quant="int4-g32", target="cpu")
    ops = [k.meta.get("op") for k in cm.program.kernels if k.target == "cpu"]
    assert "lp.fused" in ops, ops
    # the weights a native kernel repacked are stored only in its order
    names = [c.name for c in cm.program.constants]
    assert any(n.endswith(".packed") for n in names)
    assert not any(n == "layers.0.attn.wq.weight" for n in names)


TEXT = """
func.func @main(%x: tensor<?x8xf32> {lp.dims = "s0,8"}) -> tensor<?x8xf32> {
  %e = lp.exp %x {lp.dims = "s0,8"} : tensor<?x8xf32>
  %y = lp.add %e, %x {lp.dims = "s0,8"} : tensor<?x8xf32>
  func.return %y : tensor<?x8xf32>
}
"""


def _native_program() -> lpcc.runtime.Program:
    program = build_program(parse_module(TEXT), target="cpu", dim_ranges={})
    assert all(k.target == "cpu" for k in program.kernels), program.as_text()
    return program


def test_listing_names_native_kernels() -> None:
    text = _native_program().as_text()
    assert "cpu/llvm-object" in text
    assert isa_mod.selected_isa(to_run=True) in text


BLOCK = """
import sys
BLOCKED = {"torch", "xdsl", "networkx"}
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError("blocked for this test: " + name)
sys.meta_path.insert(0, Block())
"""


def test_saved_program_runs_without_torch_or_xdsl(tmp_path: Path) -> None:
    program = _native_program()
    path = save(program, tmp_path / "p.lpcc")
    x = np.linspace(-3, 3, 5 * 8, dtype=np.float32).reshape(5, 8)
    np.save(tmp_path / "x.npy", x)
    want = np.exp(x.astype(np.float64)) + x  # truth; the sum cancels near -0.57
    code = f"""
import numpy as np
import lpcc.runtime as rt
vm = rt.VM(rt.load({str(path)!r}))
y, = vm.run([np.load({str(tmp_path / "x.npy")!r})])
np.save({str(tmp_path / "y.npy")!r}, y)
assert "torch" not in sys.modules and "xdsl" not in sys.modules
"""
    done = subprocess.run(
        [sys.executable, "-c", BLOCK + code],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    got = np.load(tmp_path / "y.npy")
    # exp within 1 ulp, then one f32 add: 2 ulp of the largest term
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=2 * 2**-24 * 21)


def test_loading_code_for_missing_features_fails_clearly(tmp_path: Path) -> None:
    program = _native_program()
    k = program.kernels[0]
    meta = dict(k.meta)
    meta["object"] = dict(meta["object"], features=["avx512-imaginary"])
    bad = dataclasses.replace(
        program,
        kernels=[
            Kernel(k.name, k.target, k.kind, k.source, meta),
            *program.kernels[1:],
        ],
    )
    path = save(bad, tmp_path / "bad.lpcc")
    with pytest.raises(CpuFeatureError, match="avx512-imaginary"):
        VM(load(path))


def test_program_round_trips_through_a_file(tmp_path: Path) -> None:
    model = MLP(seed=1).eval()
    x = torch.randn(2, 16)
    cm = lpcc.compile(model, (x,), quant="int4-g32", target="cpu")
    cm.save(tmp_path / "m.lpcc")
    again = lpcc.load(tmp_path / "m.lpcc")
    with torch.no_grad():
        np.testing.assert_array_equal(again(x).numpy(), cm(x).numpy())


def test_fused_region_without_generator_is_split() -> None:
    """A region no generator takes runs op by op (here: a cumsum inside)."""
    text = """
func.func @main(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
  %y = lp.fused elementwise(%x) : (tensor<4x8xf32>) -> tensor<4x8xf32> {
  ^bb0(%a: tensor<4x8xf32>):
    %c = lp.cumsum %a dim 1 : tensor<4x8xf32>
    %n = lp.neg %c : tensor<4x8xf32>
    lp.yield %n : tensor<4x8xf32>
  }
  func.return %y : tensor<4x8xf32>
}
"""
    program = build_program(parse_module(text), target="cpu")
    ops = sorted(k.meta["op"] for k in program.kernels)
    assert ops == ["lp.cumsum", "lp.neg"], ops
    x = np.arange(32, dtype=np.float32).reshape(4, 8)
    (y,) = VM(program).run([x])
    np.testing.assert_array_equal(y, -np.cumsum(x, axis=1))


def test_native_runs_from_several_threads_and_sizes() -> None:
    """The run plan patches inputs and fresh outputs into fixed argvs per thread."""
    import threading

    vm = VM(_native_program())
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((n, 8)).astype(np.float32) for n in (1, 5, 33, 64)]
    want = [vm.run([x])[0] for x in xs]  # one thread, then the same bits
    for x, w in zip(xs, want, strict=True):
        _close(torch.from_numpy(w), torch.from_numpy(np.exp(x) + x))
    bad: list[int] = []

    def work(i: int) -> None:
        for _ in range(100):
            (y,) = vm.run([xs[i]])
            if not np.array_equal(y, want[i]):
                bad.append(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert bad == []
    (y1,) = vm.run([xs[2]])
    (y2,) = vm.run([xs[2] * 0])
    assert np.array_equal(y1, want[2])  # not overwritten by y2
    assert not np.shares_memory(y1, y2)


def test_a_kernel_error_raises_from_the_vm_and_the_vm_goes_on() -> None:
    """An out-of-range token id: the embedding's take flags it (status slot),
    the VM raises naming the instruction, and the next good call runs."""
    from lpcc.runtime import ExecutionError

    model = TinyLlama(seed=0).eval()
    ids = torch.randint(0, 60, (1, 4))
    cm = lpcc.compile(model, (ids,), target="cpu")
    vm = VM(cm.program)
    good = ids.numpy()
    (want,) = vm.run([good])
    bad = good.copy()
    bad[0, 2] = 1000
    with pytest.raises(ExecutionError, match=r"call k_take.*lp\.take \(dim 0\)"):
        vm.run([bad])
    (again,) = vm.run([good])
    assert np.array_equal(again, want)


def test_all_native_programs_run_their_kernels_in_one_native_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pool.run_steps takes the whole program: Pool.run is never called."""
    from lpcc.codegen.llvm import pool as pool_mod

    if not pool_mod.native_available():
        pytest.skip("the native driver needs x86-64 Linux")
    vm = VM(_native_program())
    x = np.random.default_rng(3).standard_normal((7, 8)).astype(np.float32)
    (want,) = vm.run([x])

    def no_python_dispatch(*args: object, **kw: object) -> None:
        raise AssertionError("Pool.run called for an all-native program")

    monkeypatch.setattr(pool_mod.Pool, "run", no_python_dispatch)
    for threads in (1, 2):
        with lpcc.config.override(num_threads=threads):
            (y,) = vm.run([x])
        assert np.array_equal(y, want)
    _close(torch.from_numpy(want), torch.from_numpy(np.exp(x) + x))
