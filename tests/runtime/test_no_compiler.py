"""A saved program without the compiler: a subprocess with xDSL, torch,
networkx, llvmlite and cupy blocked (a meta-path finder raising ImportError,
as tests/test_package.py).

(a) `lpcc.runtime.load` and `as_text` work there; (b) running a reference
program raises RuntimeDependencyError with the documented message, not an
ImportError traceback; (c) a program whose kernels are of a test target,
with a loader registered in the subprocess, runs end to end there.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from lpcc.runtime import (
    REFERENCE_NEEDS_COMPILER,
    Alloc,
    BufferInfo,
    Call,
    Constant,
    Free,
    Kernel,
    Program,
    Return,
    TensorSpec,
    View,
    save,
)

import lpcc
from lpcc.codegen.program import build_program
from lpcc.ir.dialect import parse_module

BLOCK = """
import sys
BLOCKED = {"torch", "xdsl", "networkx", "llvmlite", "cupy"}
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError("blocked for this test: " + name)
sys.meta_path.insert(0, Block())
"""


def run_blocked(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK + code],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


TEXT = """
func.func @main(%x: tensor<?x4xf32> {lp.dims = "s0,4"}) -> tensor<?x4xf32> {
  %e = lp.exp %x {lp.dims = "s0,4"} : (tensor<?x4xf32>) -> tensor<?x4xf32>
  func.return %e : tensor<?x4xf32>
}
"""


def test_load_and_list_without_compiler_then_clear_error(tmp_path: Path) -> None:
    path = save(build_program(parse_module(TEXT)), tmp_path / "ref.lpcc")
    code = f"""
import numpy as np
import lpcc.runtime as rt
p = rt.load({str(path)!r})
text = p.as_text()
assert "call k_exp_0(%0)" in text, text
assert "lpcc.ir.dialect" not in sys.modules and "lpcc.ir.interp" not in sys.modules
try:
    rt.VM(p).run([np.zeros((2, 4), np.float32)])
except rt.RuntimeDependencyError as err:
    print("ERROR:", err)
else:
    print("ran?!")
"""
    out = run_blocked(code, tmp_path)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    assert out.stdout.startswith("ERROR: " + REFERENCE_NEEDS_COMPILER)
    assert "pip install lpcc" in out.stdout and "target='cpu'" in out.stdout


def numpy_program() -> Program:
    """out = (x + w).reshape(-1) * 2; w an int4 constant, 2 a splat."""
    w = lpcc.dtype("int4")
    codes = w.encode(np.array([[-8, -1, 0, 7]]))
    return Program(
        inputs=[TensorSpec("x", ("n", 4), "f32")],
        outputs=[TensorSpec("out", ("4*n",), "f32")],
        buffers=[
            BufferInfo(("n", 4), "f32", input=0),
            BufferInfo((1, 4), "int4", constant=0),
            BufferInfo((1,), "f32", constant=1),
            BufferInfo(("n", 4), "f32", storage=0),
            BufferInfo(("4*n",), "f32", storage=0),
            BufferInfo(("4*n",), "f32", storage=1),
        ],
        constants=[
            Constant("w", "int4", (1, 4), w.pack(codes).tobytes()),
            Constant("two", "f32", (1,), np.float32([2]).tobytes(), splat=True),
        ],
        kernels=[
            Kernel("k_add", "numpy-test", "ufunc", "add", {"num_inputs": 2}),
            Kernel("k_mul", "numpy-test", "ufunc", "multiply", {"num_inputs": 2}),
        ],
        instructions=[
            Alloc(0, "16*n"),
            Call("k_add", (0, 1), (3,)),
            View(4, 3, ("4*n",)),
            Alloc(1, "16*n"),
            Call("k_mul", (4, 2), (5,)),
            Free(0),
            Return((5,)),
        ],
        target="numpy-test",
    )


def test_other_target_runs_end_to_end_without_compiler(tmp_path: Path) -> None:
    path = save(numpy_program(), tmp_path / "np.lpcc")
    code = f"""
import numpy as np
import lpcc.runtime as rt

def loader(kernel):
    ufunc = getattr(np, kernel.source)
    def run(inputs, outputs, env):
        ufunc(*inputs, out=outputs[0])
    return run

rt.register_kernel_loader("numpy-test", loader)
vm = rt.VM(rt.load({str(path)!r}))
for n in (3, 1):
    x = np.arange(4 * n, dtype=np.float32).reshape(n, 4)
    (out,) = vm.run([x])
    want = ((x + np.float32([-8, -1, 0, 7])) * 2).reshape(-1)
    assert out.dtype == np.float32 and np.array_equal(out, want), (out, want)
print("ok", sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED))
"""
    out = run_blocked(code, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok []"


def test_cuda_program_loads_without_compiler_and_runs_emulated(tmp_path: Path) -> None:
    """A saved target='cuda' program: loads with NumPy alone, says what it
    needs without a GPU, and runs on the host emulator (g++) when asked."""
    from lpcc.codegen.cuda import emu

    if not emu.available():
        pytest.skip("g++ is not installed")
    from lpcc import config

    with config.override(cuda_archs=()):
        program = build_program(parse_module(TEXT), target="cuda")
    assert {k.target for k in program.kernels} == {"cuda"}
    path = save(program, tmp_path / "cuda.lpcc")
    code = f"""
import os
import numpy as np
import lpcc.runtime as rt
vm = rt.VM(rt.load({str(path)!r}))
x = np.linspace(-2, 2, 8, dtype=np.float32).reshape(2, 4)
try:
    vm.run([x])
except rt.RuntimeDependencyError as err:
    print("ERROR:", err)
os.environ["LPCC_CUDA_DEVICE"] = "emulate"
(out,) = vm.run([x])
assert np.allclose(out, np.exp(x), rtol=1e-6), out
print("ok", sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED))
"""
    out = run_blocked(code, tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("ERROR: this program's kernels are CUDA kernels")
    assert "LPCC_CUDA_DEVICE=emulate" in lines[0]
    assert lines[1] == "ok []"
