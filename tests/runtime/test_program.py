"""Programs built by hand: the listing, validation, and the VM with a NumPy loader.

No compiler here: kernels are of a test target whose loader maps a kernel's
source text to a NumPy function, so the VM's own work (binding, storage,
views, frees, outputs) is checked against plain NumPy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest
from lpcc.runtime import (
    VM,
    Alloc,
    BufferInfo,
    Call,
    Constant,
    Copy,
    ExecutionError,
    Free,
    InputError,
    Kernel,
    Program,
    ProgramError,
    Return,
    TensorSpec,
    View,
    register_kernel_loader,
)
from lpcc.runtime.program import buffer_nbytes

TARGET = "numpy-unit"
FUNCS: dict[str, Callable[..., np.ndarray]] = {
    "add": np.add,
    "mul": np.multiply,
    "exp": np.exp,
    "tiny": lambda x: x.reshape(-1)[:1],
    "boom": lambda x: 1 / np.zeros((0, 0)).reshape(-1)[5],
}


def _loader(kernel: Kernel) -> Callable[..., None]:
    fn = FUNCS[str(kernel.source)]

    def run(ins: list[np.ndarray], outs: list[np.ndarray], env: dict[str, int]) -> None:
        outs[0][...] = fn(*ins)

    return run


register_kernel_loader(TARGET, _loader)


def kernel(name: str, op: str, n: int) -> Kernel:
    return Kernel(name, TARGET, "numpy", op, {"num_inputs": n, "num_outputs": 1})


# y = exp(x * c) + b, out2 = view(y) ; c is an int4 constant, b a splat.
INT4_CODES = bytes([0x21, 0xF8])  # codes 1, 2, 8, 15 -> values 1, 2, -8, -1


def base() -> Program:
    return Program(
        inputs=[TensorSpec("x", ("s0", 4), "f32")],
        outputs=[TensorSpec("y", ("s0", 4), "f32"), TensorSpec("z", ("4*s0",), "f32")],
        buffers=[
            BufferInfo(("s0", 4), "f32", input=0),  # %0 x
            BufferInfo((1, 4), "int4", constant=0),  # %1 c[0]
            BufferInfo((1, 4), "f32", constant=1),  # %2 c[1]
            BufferInfo(("s0", 4), "f32", storage=0),  # %3 x*c (int4 promoted)
            BufferInfo(("s0", 4), "f32", storage=1),  # %4 exp
            BufferInfo(("s0", 4), "f32", storage=0),  # %5 + b
            BufferInfo(("4*s0",), "f32", storage=0),  # %6 view
            BufferInfo(("s0", 4), "f32", storage=2),  # %7 copy of %5
        ],
        constants=[
            Constant("c", "int4", (1, 4), INT4_CODES),
            Constant("b", "f32", (1, 4), np.float32([0.5]).tobytes(), splat=True),
        ],
        kernels=[
            kernel("k_mul", "mul", 2),
            kernel("k_exp", "exp", 1),
            kernel("k_add", "add", 2),
        ],
        instructions=[
            Alloc(0, "16*s0"),
            Call("k_mul", (0, 1), (3,)),
            Alloc(1, "16*s0"),
            Call("k_exp", (3,), (4,)),
            Call("k_add", (4, 2), (5,)),
            Free(1),
            View(6, 5, ("4*s0",)),
            Alloc(2, "16*s0"),
            Copy(7, 5),
            Return((7, 6)),
        ],
        target=TARGET,
        meta={"note": "hand-built"},
    )


def reference(x: np.ndarray) -> np.ndarray:
    c = np.float32([[1, 2, -8, -1]])
    return np.exp(x * c) + np.float32(0.5)


def test_vm_runs_hand_program_against_numpy() -> None:
    vm = VM(base())
    for n in (1, 3, 0):
        x = np.random.default_rng(n).standard_normal((n, 4)).astype(np.float32)
        y, z = vm.run([x])
        want = reference(x)
        assert np.array_equal(y, want)
        assert np.array_equal(z, want.reshape(-1))
        assert y.dtype == z.dtype == np.float32


def test_constants_materialize_from_packed_codes() -> None:
    c, b = base().constants
    assert c.values().tolist() == [[1, 2, -8, -1]]
    assert c.values().dtype == np.int8  # int4's value dtype
    assert c.codes().tolist() == [[1, 2, 8, 15]]
    assert b.values().tolist() == [[0.5] * 4]
    assert c.expected_nbytes() == 2 and b.expected_nbytes() == 4


def test_as_text_lists_everything() -> None:
    text = base().as_text()
    for line in (
        "%0 x: f32[s0, 4]",
        "y: f32[s0, 4]",
        "z: f32[4*s0]",
        "constants (2, 6 B packed):",
        "c[0] c: int4[1, 4]  2 B",
        "c[1] b: f32[1, 4] splat  4 B",
        "k_mul  numpy-unit/numpy",
        "alloc st0 [16*s0 bytes]",
        "%3 = call k_mul(%0, c[0])  : f32[s0, 4] in st0",
        "%5 = call k_add(%4, c[1])",
        "free st1",
        "%6 = view %5  : f32[4*s0]",
        "%7 = copy %5  : f32[s0, 4] in st2",
        "ret %7, %6",
    ):
        assert line in text, line
    assert "kernel k_exp (numpy-unit/numpy):\nexp" in base().as_text(kernels=True)


def test_stats() -> None:
    st = base().stats({"s0": 2})
    assert st["instructions"] == 10
    assert (st["allocs"], st["calls"], st["frees"], st["views"], st["copies"]) == (
        3,
        3,
        1,
        1,
        1,
    )
    assert st["constant_bytes"] == 6 and st["storages"] == 3
    assert st["peak_bytes"] == 2 * 32  # st0 and st1, then st0 and st2
    assert base().stats()["peak_bytes"] is None


def test_buffer_nbytes_is_value_domain_size() -> None:
    assert buffer_nbytes(("s0", 4), "f32") == "16*s0"
    assert buffer_nbytes((3, 5), "int4") == 15  # int4 values are int8
    assert buffer_nbytes((2,), "f16") == 8  # f16 values are float32
    assert buffer_nbytes(("2*s0", "s1"), "bf16") == "4*(2*s0)*s1"
    assert buffer_nbytes((0, "s0"), "f32") == 0
    assert buffer_nbytes(("s0",), "uint1") == "s0"


def _replace_ins(i: int, new: object) -> Callable[[Program], None]:
    def edit(p: Program) -> None:
        p.instructions[i] = new  # type: ignore[call-overload]

    return edit


def _replace_buf(i: int, **kw: object) -> Callable[[Program], None]:
    def edit(p: Program) -> None:
        p.buffers[i] = dataclasses.replace(p.buffers[i], **kw)  # type: ignore[arg-type]

    return edit


BROKEN: list[tuple[str, Callable[[Program], None], str]] = [
    ("use before def", _replace_ins(1, Call("k_mul", (0, 4), (3,))), "before it is"),
    (
        "use after free",
        _replace_ins(6, View(6, 4, ("4*s0",))),
        "storage st1, which is freed",
    ),
    ("double alloc", _replace_ins(2, Alloc(0, 8)), "allocated twice"),
    ("free unborn", _replace_ins(5, Free(2)), "st2 is unborn"),
    (
        "unknown kernel",
        _replace_ins(1, Call("k_nope", (0, 1), (3,))),
        "no kernel named",
    ),
    ("arity", _replace_ins(1, Call("k_mul", (0,), (3,))), "num_inputs=2"),
    ("index", _replace_ins(1, Call("k_mul", (0, 99), (3,))), "buffer 99 out of range"),
    ("write twice", _replace_ins(4, Call("k_add", (4, 2), (3,))), "defined twice"),
    ("in-place", _replace_ins(3, Call("k_exp", (3,), (3,))), "defined twice"),
    ("ret count", _replace_ins(9, Return((7,))), "returns 1 buffers for 2"),
    ("ret type", _replace_ins(9, Return((6, 7))), "differs from output 'y'"),
    ("no ret", lambda p: p.instructions.pop(), "no ret"),
    ("after ret", lambda p: p.instructions.append(Free(0)), "comes after ret"),
    ("view storage", _replace_buf(6, storage=1), "share its source's storage"),
    ("no storage", _replace_buf(3, storage=None), "has no storage"),
    ("bad storage", _replace_buf(3, storage=7), "storage 7 out of range"),
    ("input type", _replace_buf(0, dtype="f16"), "differs from input 'x'"),
    ("unbound input", _replace_buf(0, input=None), "input #0: no buffer"),
    ("dtype name", _replace_buf(4, dtype="f99"), "unknown element type"),
    ("expr", _replace_buf(4, shape=("s0+", 4)), "does not parse"),
    (
        "constant size",
        lambda p: p.constants.__setitem__(0, Constant("c", "int4", (1, 4), b"\x21")),
        "holds 1 bytes",
    ),
    (
        "padding bits",
        lambda p: p.constants.__setitem__(
            0, Constant("c", "int4", (1, 3), b"\x21\xf8")
        ),
        "padding bits",
    ),
    ("range", lambda p: p.dim_ranges.update(s0=(5, 2)), "bad range"),
]


@pytest.mark.parametrize(
    ("what", "edit", "message"), BROKEN, ids=[b[0] for b in BROKEN]
)
def test_validate_rejects(
    what: str, edit: Callable[[Program], None], message: str
) -> None:
    p = base()
    p.validate()
    edit(p)
    with pytest.raises(ProgramError, match=message):
        p.validate()
    with pytest.raises(ProgramError):
        VM(p)


def test_input_checks() -> None:
    vm = VM(base())
    with pytest.raises(InputError, match=r"takes 1 inputs \(x\), got 2"):
        vm.run([np.zeros((1, 4), np.float32)] * 2)
    with pytest.raises(InputError, match="list of input arrays"):
        vm.run(np.zeros((1, 4), np.float32))  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"'x' \(#0\): dimension 1 is 5, expected 4"):
        vm.run([np.zeros((1, 5), np.float32)])
    p = Program(
        inputs=[TensorSpec("q", (3,), "int4"), TensorSpec("m", (3,), "uint1")],
        outputs=[TensorSpec("o", (3,), "int4")],
        buffers=[
            BufferInfo((3,), "int4", input=0),
            BufferInfo((3,), "uint1", input=1),
            BufferInfo((3,), "int4", storage=0),
        ],
        constants=[],
        kernels=[],
        instructions=[Alloc(0, 3), Copy(2, 0), Return((2,))],
        target=TARGET,
    )
    vm = VM(p)
    (out,) = vm.run([np.int8([-8, 0, 7]), np.array([True, False, True])])
    assert out.tolist() == [-8, 0, 7] and out.dtype == np.int8
    with pytest.raises(InputError, match=r"'q' \(#0\): values must lie in \[-8, 7\]"):
        vm.run([np.int8([-9, 0, 7]), np.array([True, False, True])])
    with pytest.raises(InputError, match=r"'m' \(#1\): expected dtype uint1"):
        vm.run([np.int8([1, 2, 3]), np.int8([1, 0, 1])])


def _copy_program(dt: str) -> Program:
    return Program(
        inputs=[TensorSpec("v", (3,), dt)],
        outputs=[TensorSpec("o", (3,), dt)],
        buffers=[BufferInfo((3,), dt, input=0), BufferInfo((3,), dt, storage=0)],
        constants=[],
        kernels=[],
        instructions=[Alloc(0, buffer_nbytes((3,), dt)), Copy(1, 0), Return((1,))],
        target=TARGET,
    )


def test_int1_inputs_are_range_checked() -> None:
    # int1 holds {-1, 0} in int8: a 1 or -2 is not an int1 value.
    vm = VM(_copy_program("int1"))
    (out,) = vm.run([np.int8([-1, 0, -1])])
    assert out.tolist() == [-1, 0, -1]
    with pytest.raises(InputError, match=r"'v' \(#0\): values must lie in \[-1, 0\]"):
        vm.run([np.int8([-1, 1, 0])])


def test_e8m0_inputs_round_like_float_inputs() -> None:
    # e8m0 values are powers of two; 3 is a tie and rounds up, 1.2 down to 1.
    (out,) = VM(_copy_program("e8m0")).run([np.float32([3.0, 1.2, 0.25])])
    assert out.tolist() == [4.0, 1.0, 0.25] and out.dtype == np.float32


def test_unknown_target_and_bad_loader() -> None:
    p = base()
    p.kernels[0] = dataclasses.replace(p.kernels[0], target="warp-drive")
    with pytest.raises(
        ProgramError, match=r"target 'warp-drive'.*register_kernel_loader"
    ):
        VM(p)
    with pytest.raises(ProgramError, match="must be callable"):
        register_kernel_loader("x", 3)  # type: ignore[arg-type]


def test_execution_errors_name_the_instruction() -> None:
    p = base()
    p.instructions[0] = Alloc(0, "s0")  # too small for %3
    with pytest.raises(ExecutionError, match=r"#1 `%3 = call k_mul.*needs 32 bytes"):
        VM(p).run([np.zeros((2, 4), np.float32)])
    p = base()
    p.kernels[1] = dataclasses.replace(p.kernels[1], source="boom")
    msg = r"#3 `%4 = call k_exp\(%3\) .*`: IndexError"
    with pytest.raises(ExecutionError, match=msg):
        VM(p).run([np.zeros((2, 4), np.float32)])


# -- the run plan (runtime/plan.py) ---------------------------------------------


def test_outputs_of_one_run_survive_the_next() -> None:
    vm = VM(base())
    x1 = np.ones((2, 4), np.float32)
    y1, z1 = vm.run([x1])
    y2, z2 = vm.run([np.zeros((2, 4), np.float32)])
    assert np.array_equal(y1, reference(x1)) and np.array_equal(z1, y1.reshape(-1))
    assert np.array_equal(y2, reference(np.zeros((2, 4), np.float32)))
    assert not np.shares_memory(y1, y2) and not np.shares_memory(z1, z2)


def test_temporaries_share_one_arena_first_fit() -> None:
    from lpcc.runtime.plan import RunPlan, _first_fit

    assert _first_fit([], 10) == 0
    assert _first_fit([(0, 10)], 5) == 64  # 64-byte aligned after the block
    assert _first_fit([(64, 100)], 64) == 0  # fits in the gap before
    assert _first_fit([(64, 100)], 65) == 128
    vm = VM(base())
    vm.run([np.ones((3, 4), np.float32)])
    (plan,) = vm._local.plans.values()
    assert isinstance(plan, RunPlan)
    # st0 holds %5, which %6 returns: fresh per run; st1 (48 bytes) and
    # nothing else is a temporary; st2 holds the returned copy: fresh.
    assert plan._fresh_sizes == [48, 48]
    assert plan._arena.nbytes == 48


def test_one_vm_runs_on_several_threads() -> None:
    import threading

    vm = VM(base())
    xs = [np.full((5, 4), i / 8, np.float32) for i in range(4)]
    bad: list[int] = []

    def work(i: int) -> None:
        for _ in range(200):
            y, _ = vm.run([xs[i]])
            if not np.array_equal(y, reference(xs[i])):
                bad.append(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert bad == []


def test_a_plan_per_size_and_at_most_sixteen() -> None:
    vm = VM(base())
    for n in range(20):
        x = np.full((n, 4), 0.25, np.float32)
        assert np.array_equal(vm.run([x])[0], reference(x))
    assert len(vm._local.plans) == 16
    x = np.full((19, 4), 0.5, np.float32)  # the newest plan, reused
    assert np.array_equal(vm.run([x])[0], reference(x))


def test_inputs_the_fast_path_skips_still_get_checked() -> None:
    from lpcc.ir.symbolic import evaluate

    def fix(d: int | str) -> int:
        return d if isinstance(d, int) else evaluate(d, {"s0": 2})

    p = base()  # with s0 = 2: static shapes, so the fast path applies
    p.inputs = [
        dataclasses.replace(s, shape=tuple(map(fix, s.shape))) for s in p.inputs
    ]
    p.outputs = [
        dataclasses.replace(s, shape=tuple(map(fix, s.shape))) for s in p.outputs
    ]
    p.buffers = [
        dataclasses.replace(b, shape=tuple(map(fix, b.shape))) for b in p.buffers
    ]
    p.instructions = [
        dataclasses.replace(i, nbytes=fix(i.nbytes))
        if isinstance(i, Alloc)
        else dataclasses.replace(i, shape=tuple(map(fix, i.shape)))
        if isinstance(i, View)
        else i
        for i in p.instructions
    ]
    vm = VM(p)
    assert vm._fast is not None
    x = np.arange(8, dtype=np.float32).reshape(2, 4) / 8
    assert np.array_equal(vm.run([x])[0], reference(x))
    with pytest.raises(InputError, match="expected dtype f32"):
        vm.run([x.astype(np.float64)])
    assert np.array_equal(vm.run([np.asfortranarray(x)])[0], reference(x))
    with pytest.raises(InputError, match="dimension 0 is 3, expected 2"):
        vm.run([np.zeros((3, 4), np.float32)])
    with pytest.raises(InputError, match="list of input arrays"):
        vm.run(x)  # type: ignore[arg-type]
