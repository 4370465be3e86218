"""CUDA data-movement kernels (permute, slice, broadcast, concat, take, gather,
cumsum) on the host emulator vs the interpreter, bit for bit.

Every kernel function holds one op; `interp.run_function` is the oracle and
the CUDA result must equal it byte for byte (the kernels copy elements by
size; cumsum adds in the interpreter's order). Shapes are odd (1, 3, 5, 17),
element sizes 1/2/4/8 bytes, dims dynamic where the op allows.

Cost: the emulator compiles each distinct source with g++ (~2 s) and nvcc
takes ~1 s a source and arch, so all kernels of this file are lowered into
ONE source (`Batch`, entry names `mv<j>`) that compiles once for the
emulator and once per architecture for nvcc; `Batch.run` is `run_cuda`
with that source. One test goes through `run_cuda` itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pytest
from lpcc.runtime.kernels import ExecutionError
from xdsl.dialects import func

import lpcc
from lpcc.codegen.cuda import nvcc
from lpcc.codegen.cuda.kernel import ARCHS, CudaKernel, elem, shape
from lpcc.codegen.cuda.lower import kernel_meta, lower_kernel, run_cuda
from lpcc.codegen.cuda.runner import cuda_kernel_fn
from lpcc.errors import IRError
from lpcc.ir import interp
from lpcc.ir.dialect import ops as lp
from lpcc.ir.symbolic import Dim, bind, evaluate_shape
from tests.codegen.helpers import op_fn as make_fn
from tests.codegen.helpers import rand
from tests.codegen.helpers import same_bits as same

# -- helpers (test_cuda_reduce.py imports them) ----------------------------------------


@dataclass
class Case:
    """One kernel function and the input sets it runs on."""

    fn: func.FuncOp
    inputs: list[list[np.ndarray]] = field(default_factory=list)


class Batch:
    """Kernel functions lowered into ONE CUDA source (entries `<stem><j>`), so
    that g++ (emulator) and nvcc compile it once."""

    def __init__(self, cases: dict[str, Case], stem: str) -> None:
        self.kernels: dict[str, CudaKernel] = {}
        sources = []
        for j, (name, case) in enumerate(cases.items()):
            ck = lower_kernel(case.fn, "sm_80", entry=f"{stem}{j}")
            assert ck is not None, f"{name}: no CUDA kernel"
            self.kernels[name] = ck
            sources.append(ck.source)
        self.cases = cases
        self.source = "\n".join(sources)

    def run(self, name: str, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """`lower.run_cuda` on the emulator, with the batch's source."""
        fn, ck = self.cases[name].fn, self.kernels[name]
        env: dict[str, int] = {}
        arrays = []
        for i, (arg, x) in enumerate(zip(fn.body.block.args, inputs, strict=True)):
            x = np.ascontiguousarray(np.asarray(x, elem(arg).value_dtype))
            bind(shape(arg), x.shape, env, f"input #{i}")
            arrays.append(x)
        ret = fn.body.block.last_op
        assert ret is not None
        outs = [
            np.zeros(evaluate_shape(shape(v), env), elem(v).value_dtype)
            for v in ret.operands
        ]
        meta = kernel_meta(ck, len(arrays), len(outs), "sm_80")
        cuda_kernel_fn(name, self.source, meta, {}, device="emulate")(arrays, outs, env)
        return outs

    def check(self, name: str) -> None:
        """Each input set: emulated CUDA == interpreter, bit for bit."""
        for xs in self.cases[name].inputs:
            (want,) = interp.run_function(self.cases[name].fn, xs)
            (got,) = self.run(name, xs)
            same(got, want)


def compile_all(source: str, arch: str) -> None:
    """nvcc accepts the batch for `arch` (raises CudaCompileError with its log)."""
    assert nvcc.compile_cuda(source, arch)


# -- the cases -------------------------------------------------------------------------

TYPES = ["f32", "int8", "int16", "int64", "uint1", "uint4", "f16"]


def _cases() -> dict[str, Case]:
    c: dict[str, Case] = {}

    def add(name: str, fn: func.FuncOp, *inputs: list[np.ndarray]) -> None:
        c[name] = Case(fn, list(inputs))

    # permute: every element size; transposes, a kept last dim, size-1 dims
    for dt in TYPES:
        for shp, perm in [((3, 5, 17), (2, 0, 1)), ((2, 1, 3, 4), (0, 2, 1, 3))]:
            fn = make_fn([(dt, shp)], lambda x, p=perm: lp.PermuteOp(x, p))
            add(f"permute-{dt}-{perm}", fn, [rand(dt, shp)])
    fn = make_fn([("f32", (17, 33))], lambda x: lp.PermuteOp(x, (1, 0)))
    add("permute-transpose", fn, [rand("f32", (17, 33))])
    fn = make_fn([("f32", (7,))], lambda x: lp.PermuteOp(x, (0,)))
    add("permute-identity", fn, [rand("f32", (7,))])
    dims: list[Dim] = ["s0", 8, 3]
    fn = make_fn(
        [("f32", dims)], lambda x: lp.PermuteOp(x, (2, 0, 1)), out_dims=[3, "s0", 8]
    )
    add(
        "permute-dynamic",
        fn,
        *[[rand("f32", (n, 8, 3), seed=n)] for n in (1, 13, 0)],
    )

    # broadcast
    for dt in ["f32", "int8", "int64", "uint1"]:
        for src, dst in [((3, 1, 5), (2, 3, 4, 5)), ((5, 1), (5, 8)), ((8,), (3, 8))]:
            fn = make_fn([(dt, src)], lambda x, d=dst: lp.BroadcastOp(x, d))
            add(f"broadcast-{dt}-{src}-{dst}", fn, [rand(dt, src)])
    fn = make_fn(
        [("int64", ("s0", 4))],
        lambda x: lp.BroadcastOp(x, [-1, 4]),
        out_dims=["Max(s0, 3)", 4],
    )  # a dynamic size that is 1 on some calls and broadcasts then
    add(
        "broadcast-dynamic",
        fn,
        *[[rand("int64", (n, 4), seed=n)] for n in (1, 3, 5)],
    )

    # slice
    for dt in ["f32", "int16", "int64", "uint1"]:
        for shp, off, size, step in [
            ((10, 8), (1, 2), (4, 3), (2, 2)),
            ((17,), (1,), (6,), (3,)),
            ((4, 6, 5), (1, 1, 0), (3, 2, 5), (1, 3, 1)),
        ]:
            fn = make_fn(
                [(dt, shp)],
                lambda x, o=off, s=size, t=step: lp.SliceOp(x, o, s, t),
            )
            add(f"slice-{dt}-{shp}-{step}", fn, [rand(dt, shp)])
    fn = make_fn(
        [("f32", ("s0", 8))],
        lambda x: lp.SliceOp(x, (1, 2), (-1, 3), (1, 2)),
        out_dims=["s0 - 1", 3],
    )
    add(
        "slice-dynamic",
        fn,
        *[[rand("f32", (n, 8), seed=n)] for n in (1, 2, 17)],
    )

    # concat
    for dt in ["f32", "int8", "int64", "f16"]:
        for shapes, d in [
            (((3, 2, 5), (3, 1, 5), (3, 4, 5), (3, 3, 5)), 1),
            (((1, 7), (3, 7), (2, 7)), 0),
            (((1, 4, 3), (1, 4, 2)), 2),
        ]:
            fn = make_fn(
                [(dt, s) for s in shapes], lambda *xs, d=d: lp.ConcatOp(list(xs), d)
            )
            ins = [rand(dt, s, seed=i) for i, s in enumerate(shapes)]
            add(f"concat-{dt}-{len(shapes)}-dim{d}", fn, ins)
    fn = make_fn([("f32", (3, 5))], lambda x: lp.ConcatOp([x, x], 1))
    add("concat-same-input-twice", fn, [rand("f32", (3, 5))])
    fn = make_fn(
        [("f32", ("s0", 4)), ("f32", ("s1", 4))],
        lambda a, b: lp.ConcatOp([a, b], 0),
        out_dims=["s0 + s1", 4],
    )
    add(
        "concat-dynamic",
        fn,
        *[
            [rand("f32", (n, 4), seed=n), rand("f32", (m, 4), seed=m + 1)]
            for n, m in ((1, 2), (0, 3), (17, 5))
        ],
    )

    # take
    ids = np.array([[3, 0, 49, 7, 7, -1, 12]], np.int64)
    for dt in ["f32", "int8", "int64", "uint1", "f16"]:
        fn = make_fn(
            [(dt, (50, 16)), ("int64", ids.shape)], lambda x, i: lp.TakeOp(x, i, 0)
        )
        add(f"take-embedding-{dt}", fn, [rand(dt, (50, 16)), ids])
    for idt, dim in [("int32", 1), ("int8", 2), ("uint8", 0)]:
        xshape = (3, 10, 4)
        n = xshape[dim]
        lo = 0 if idt.startswith("u") else -n
        idx = np.random.default_rng(1).integers(lo, n, size=(2, 3))
        idx = idx.astype(lpcc.dtype(idt).value_dtype)
        fn = make_fn(
            [("f32", xshape), (idt, idx.shape)], lambda x, i, d=dim: lp.TakeOp(x, i, d)
        )
        add(f"take-{idt}-dim{dim}", fn, [rand("f32", xshape), idx])
    fn = make_fn(
        [("f32", ("s0", 6)), ("int64", ("s1",))],
        lambda x, i: lp.TakeOp(x, i, 0),
        out_dims=["s1", 6],
    )
    add(
        "take-dynamic",
        fn,
        [rand("f32", (4, 6)), np.array([0, 3, -4, 2, 1], np.int64)],
        [rand("f32", (9, 6)), np.array([8], np.int64)],
    )
    for idt in ("int64", "int8", "uint8"):
        fn = make_fn([("f32", (5, 3)), (idt, (4,))], lambda x, i: lp.TakeOp(x, i, 0))
        ok = [4, 0, 0, 2] if idt == "uint8" else [4, -5, 0, 2]
        ind = np.array(ok, lpcc.dtype(idt).value_dtype)
        add(f"take-range-{idt}", fn, [rand("f32", (5, 3)), ind])

    # gather
    for dt in ["f32", "int8", "int64", "uint1"]:
        for xshape, ishape, dim in [
            ((2, 5, 4), (2, 6, 4), 1),
            ((4, 3), (2, 3), 0),
            ((1, 5), (3, 4), 1),  # a size-1 input dim broadcasts (NumPy)
        ]:
            n = xshape[dim]
            rng = np.random.default_rng(2)
            idx = rng.integers(-n, n, size=ishape).astype(np.int64)
            fn = make_fn(
                [(dt, xshape), ("int64", ishape)],
                lambda x, i, d=dim: lp.GatherOp(x, i, d),
            )
            add(f"gather-{dt}-{xshape}-{ishape}", fn, [rand(dt, xshape), idx])
    fn = make_fn(
        [("f32", ("s0", 5)), ("int32", ("s0", 4))],
        lambda x, i: lp.GatherOp(x, i, 1),
        out_dims=["s0", 4],
    )
    add(
        "gather-dynamic",
        fn,
        *[
            [
                rand("f32", (n, 5)),
                np.random.default_rng(n).integers(0, 5, (n, 4)).astype(np.int32),
            ]
            for n in (1, 7)
        ],
    )

    # cumsum: in order, so f32 is bit for bit; ints saturate; bool is "any"
    for dt, shp, dim in [
        ("f32", (3, 37), 1),
        ("f32", (5, 4, 3), 1),
        ("int8", (4, 40), 1),
        ("int64", (6, 3), 0),
        ("uint1", (3, 9), 1),
        ("uint4", (2, 33), 1),
    ]:
        fn = make_fn([(dt, shp)], lambda x, d=dim: lp.CumsumOp(x, d))
        add(f"cumsum-{dt}-{shp}-dim{dim}", fn, [rand(dt, shp)])
    fn = make_fn([("f32", (2, "s0"))], lambda x: lp.CumsumOp(x, 1), out_dims=[2, "s0"])
    add("cumsum-dynamic", fn, *[[rand("f32", (2, n), seed=n)] for n in (1, 50)])
    return c


CASES = _cases()


@pytest.fixture(scope="module")
def batch() -> Batch:
    return Batch(CASES, "mv")


@pytest.mark.parametrize("name", list(CASES))
def test_matches_interpreter(batch: Batch, name: str) -> None:
    batch.check(name)


@pytest.mark.parametrize("arch", ARCHS)
def test_nvcc_compiles_every_kernel(batch: Batch, arch: str) -> None:
    compile_all(batch.source, arch)


def test_notes_and_index_width(batch: Batch) -> None:
    """Merged dims: [3, 5, 17] -> [17, 3, 5] is a 2-d copy ([17, 15]); moving
    a size-1 dim is a flat copy; static small tensors take 32-bit indices,
    dynamic ones 64-bit."""
    note = batch.kernels["permute-f32-(2, 0, 1)"].note
    assert "2-d strided copy, unsigned indices" in note, note
    assert "1-d" in batch.kernels["permute-f32-(0, 2, 1, 3)"].note
    assert "1-d" in batch.kernels["permute-identity"].note
    assert "unsigned long long" in batch.kernels["permute-dynamic"].note


@pytest.mark.parametrize(
    ("idt", "idx"),
    [
        ("int64", [7, 0, 2, 1]),
        ("int64", [0, -9, 2, 1]),  # below -n
        ("int64", [0, 1, 2, 1 << 40]),
        ("int8", [0, 1, 5, 4]),  # == n
        ("uint8", [0, 1, 200, 4]),
    ],
)
def test_take_out_of_range_sets_status(batch: Batch, idt: str, idx: list) -> None:
    """The status slot: the kernel flags the index (reading row 0 meanwhile)
    and the caller raises, as the interpreter does."""
    name = f"take-range-{idt}"
    x = rand("f32", (5, 3))
    ind = np.array(idx, lpcc.dtype(idt).value_dtype)
    with pytest.raises(IRError, match="out of range"):
        interp.run_function(CASES[name].fn, [x, ind])
    with pytest.raises(ExecutionError, match=r"lp.take \(dim 0\): an index is out"):
        batch.run(name, [x, ind])


def test_gather_out_of_range_and_unhandled(batch: Batch) -> None:
    name = "gather-f32-(2, 5, 4)-(2, 6, 4)"
    idx = np.zeros((2, 6, 4), np.int64)
    idx[1, 2, 3] = 5
    with pytest.raises(ExecutionError, match=r"lp.gather \(dim 1\)"):
        batch.run(name, [rand("f32", (2, 5, 4)), idx])
    # sizes that differ off `dim`: NumPy's broadcasting rules; interpreter only
    bad = make_fn(
        [("f32", (3, 5)), ("int64", (2, 4))], lambda x, i: lp.GatherOp(x, i, 1)
    )
    assert lower_kernel(bad) is None
    # narrow-float cumsum results need the codec's rounding: interpreter only
    f16 = make_fn([("f16", (3, 4))], lambda x: lp.CumsumOp(x, 1))
    assert lower_kernel(f16) is None


def test_dynamic_slice_overrun_writes_zeros_via_run_cuda() -> None:
    """Through `run_cuda` itself. The interpreter rejects a slice past the
    end; the kernel cannot raise, so it must not read past the input: zeros."""
    fn = make_fn(
        [("f32", ("s0", 8))],
        lambda x: lp.SliceOp(x, (1, 0), (-1, 8), (1, 1)),
        out_dims=["s0", 8],
    )
    x = rand("f32", (3, 8)) + 1
    with pytest.raises(IRError, match="reads index 3"):
        interp.run_function(fn, [x])
    got = run_cuda(fn, [x], device="emulate")
    assert got is not None
    same(got[0], np.zeros((3, 8), np.float32))
