"""The llama.cpp column of the kernel benchmarks: ggml's mul_mat through ctypes.

llama.cpp's CPU kernels live in ggml's shared libraries, which the PyPI
package llama-cpp-python builds from source and installs under
`llama_cpp/lib` (the `bench` extra; build it with
`CMAKE_ARGS="-DGGML_NATIVE=ON"` so ggml uses this CPU's instructions). This
module loads `libggml-base`, `libggml-cpu` and `libggml` with ctypes and uses
only ggml's public C API: quantize the weights (`ggml_quantize_chunk`), put
them in a CPU buffer, build a graph of `mul_mat` nodes, run it with
`ggml_backend_graph_compute` on 1 or 2 threads.

Repacking: when llama.cpp loads a model it puts each weight in the
`CPU_REPACK` buffer if ggml has an interleaved layout for that type on this
CPU (Q4_0 and Q4_K on AVX2, Q2_K only with AVX-512, ...). This module asks
ggml the same question llama.cpp asks (`ggml_backend_dev_supports_op` on a
`mul_mat` whose weight sits in a `CPU_REPACK` buffer) and measures the
repacked layout exactly where the answer is yes, plus the plain layout
always (what a plain ggml context and `test-backend-ops` use).

Timing: one repetition is one `ggml_backend_graph_compute` of a graph of R
`mul_mat` nodes (R = the number of weight copies when cold, 8 when hot),
divided by R; that is how llama.cpp runs a model (one graph per token), and
it includes ggml's quantization of the f32 activations to Q8_0/Q8_K inside
every `mul_mat`.

Runs as a child process of gemv.py (`python _ggml.py --spec JSON`), one
JSON record per line on stdout: a crash inside ggml (or its OpenMP runtime
meeting torch's) cannot take the benchmark down with it.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib.metadata
import importlib.util
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    COLD_BYTES,
    bench_activations,
    bench_weights,
    copies_for,
    nmse,
    time_calls,
)

# ggml_type ids (ggml.h) and the name ggml_type_name returns for each: the
# names are checked at load time, so a renumbered ggml fails loudly.
TYPES: dict[str, int] = {"Q4_0": 2, "Q8_0": 8, "Q2_K": 10, "Q3_K": 11, "Q4_K": 12}
TYPES |= {"TQ2_0": 35}
F32 = 0
# The bit-width class each type competes in (for --bits filtering and goals).
BIT_CLASS = {"Q4_0": 4, "Q4_K": 4, "Q3_K": 3, "Q2_K": 2, "TQ2_0": 2, "Q8_0": 8}
DEFAULT_TYPES = ("Q4_0", "Q4_K", "Q3_K", "Q2_K", "TQ2_0")
HOT_NODES = 8  # mul_mat nodes per graph when one weight copy is reused


class GgmlUnavailable(Exception):
    """llama-cpp-python (and so ggml's libraries) is not installed."""


class _InitParams(ctypes.Structure):
    _fields_ = [
        ("mem_size", ctypes.c_size_t),
        ("mem_buffer", ctypes.c_void_p),
        ("no_alloc", ctypes.c_bool),
    ]


def library_dir() -> Path:
    """Where llama-cpp-python installed ggml's shared libraries."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.origin is None:
        raise GgmlUnavailable(
            "llama-cpp-python is not installed (pip install the 'bench' extra)"
        )
    return Path(spec.origin).parent / "lib"


def _sig() -> dict[str, tuple[Any, list[Any]]]:
    vp, sz, i64, c_int = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int64, ctypes.c_int
    return {
        "ggml_init": (vp, [_InitParams]),
        "ggml_free": (None, [vp]),
        "ggml_tensor_overhead": (sz, []),
        "ggml_graph_overhead_custom": (sz, [sz, ctypes.c_bool]),
        "ggml_new_tensor_2d": (vp, [vp, c_int, i64, i64]),
        "ggml_mul_mat": (vp, [vp, vp, vp]),
        "ggml_new_graph_custom": (vp, [vp, sz, ctypes.c_bool]),
        "ggml_build_forward_expand": (None, [vp, vp]),
        "ggml_nbytes": (sz, [vp]),
        "ggml_row_size": (sz, [c_int, i64]),
        "ggml_type_name": (ctypes.c_char_p, [c_int]),
        "ggml_quantize_chunk": (sz, [c_int, vp, vp, i64, i64, i64, vp]),
        "ggml_backend_cpu_init": (vp, []),
        "ggml_backend_cpu_set_n_threads": (None, [vp, c_int]),
        "ggml_backend_graph_compute": (c_int, [vp, vp]),
        "ggml_backend_free": (None, [vp]),
        "ggml_backend_cpu_buffer_type": (vp, []),
        "ggml_backend_alloc_ctx_tensors_from_buft": (vp, [vp, vp]),
        "ggml_backend_buffer_free": (None, [vp]),
        "ggml_backend_tensor_set": (None, [vp, vp, sz, sz]),
        "ggml_backend_tensor_get": (None, [vp, vp, sz, sz]),
        "ggml_backend_dev_by_type": (vp, [c_int]),
        "ggml_backend_dev_backend_reg": (vp, [vp]),
        "ggml_backend_dev_supports_op": (ctypes.c_bool, [vp, vp]),
        "ggml_backend_reg_get_proc_address": (vp, [vp, ctypes.c_char_p]),
        "ggml_backend_buft_name": (ctypes.c_char_p, [vp]),
        "ggml_cpu_has_avx2": (c_int, []),
        "ggml_cpu_has_avx512": (c_int, []),
    }


class Ggml:
    """ggml's C API as ctypes functions (attributes named like the C functions)."""

    def __init__(self) -> None:
        libdir = library_dir()
        libs = []
        for name in ("ggml-base", "ggml-cpu", "ggml"):
            path = libdir / f"lib{name}.so"
            if not path.exists():
                raise GgmlUnavailable(f"{path} is missing: reinstall llama-cpp-python")
            libs.append(ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL))
        for name, (res, args) in _sig().items():
            fn = None
            for lib in reversed(libs):
                with contextlib.suppress(AttributeError):
                    fn = getattr(lib, name)
                    break
            if fn is None:
                raise GgmlUnavailable(f"ggml symbol {name} not found in {libdir}")
            fn.restype, fn.argtypes = res, args
            setattr(self, name, fn)
        for tname, tid in TYPES.items():
            got = self.ggml_type_name(tid).decode()
            if got.upper() != tname:
                raise GgmlUnavailable(
                    f"ggml type {tid} is {got!r}, expected {tname}: this ggml "
                    "numbers its types differently; update _ggml.TYPES"
                )
        self.cpu_dev = self.ggml_backend_dev_by_type(0)  # GGML_BACKEND_DEVICE_TYPE_CPU
        self.cpu_buft = self.ggml_backend_cpu_buffer_type()
        self.repack_buft = self._repack_buffer_type()
        # The version from the metadata, not `import llama_cpp`: measured here,
        # importing the llama_cpp module before this class loads the libraries
        # made every repacked Q4_0 product come out NaN (cause unknown).
        try:
            self.version = importlib.metadata.version("llama-cpp-python")
        except importlib.metadata.PackageNotFoundError:
            self.version = "?"

    def _repack_buffer_type(self) -> int | None:
        """The CPU_REPACK buffer type, found the way llama.cpp finds it."""
        reg = self.ggml_backend_dev_backend_reg(self.cpu_dev)
        fp = self.ggml_backend_reg_get_proc_address(
            reg, b"ggml_backend_dev_get_extra_bufts"
        )
        if not fp:
            return None
        get_extra = ctypes.CFUNCTYPE(ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p)(
            fp
        )
        arr = get_extra(self.cpu_dev)
        i = 0
        while arr and arr[i]:
            if self.ggml_backend_buft_name(arr[i]) == b"CPU_REPACK":
                return arr[i]
            i += 1
        return None


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence fd 2 (the repack buffer logs one line per tensor)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@dataclass
class _Weights:
    ctx: int
    buf: int
    tensors: list[int]


class MatmulBench:
    """One quantized weight matrix (type, layout) in C copies, ready to multiply."""

    def __init__(
        self,
        g: Ggml,
        type_name: str,
        w: np.ndarray,
        copies: int,
        repacked: bool,
    ) -> None:
        self.g, self.type_name, self.repacked = g, type_name, repacked
        self.tid = TYPES[type_name]
        self.n, self.k = w.shape
        row = g.ggml_row_size(self.tid, self.k)
        self.nbytes = row * self.n
        q = np.empty(self.nbytes, np.uint8)
        src = np.ascontiguousarray(w, np.float32)
        g.ggml_quantize_chunk(
            self.tid, src.ctypes.data, q.ctypes.data, 0, self.n, self.k, None
        )
        self.copies = copies
        buft = g.repack_buft if repacked else g.cpu_buft
        ctx = g.ggml_init(
            _InitParams(g.ggml_tensor_overhead() * (copies + 2), None, True)
        )
        tensors = [
            g.ggml_new_tensor_2d(ctx, self.tid, self.k, self.n) for _ in range(copies)
        ]
        buf = g.ggml_backend_alloc_ctx_tensors_from_buft(ctx, buft)
        if not buf:
            g.ggml_free(ctx)
            raise MemoryError(f"ggml could not allocate {copies} x {self.nbytes} B")
        self._w = _Weights(ctx, buf, tensors)
        if repacked and not self._llama_cpp_repacks():
            self.close()
            raise ValueError(f"llama.cpp does not repack {type_name} on this CPU")
        with _quiet_stderr():
            for t in tensors:
                g.ggml_backend_tensor_set(t, q.ctypes.data, 0, self.nbytes)

    def _llama_cpp_repacks(self) -> bool:
        """Whether ggml takes a mul_mat on this weight in the CPU_REPACK buffer."""
        g = self.g
        ctx = g.ggml_init(_InitParams(g.ggml_tensor_overhead() * 4, None, True))
        try:
            x = g.ggml_new_tensor_2d(ctx, F32, self.k, 1)
            op = g.ggml_mul_mat(ctx, self._w.tensors[0], x)
            return bool(g.ggml_backend_dev_supports_op(g.cpu_dev, op))
        finally:
            g.ggml_free(ctx)

    def run_points(
        self,
        backend: int,
        ms: list[int],
        threads: list[int],
        nodes: int,
        w_ref: np.ndarray,
        target_s: float,
    ) -> Iterator[dict[str, Any]]:
        """Time y = x W^T for each M and thread count; yields one record each."""
        g = self.g
        for m in ms:
            n_graph = 2 * nodes + 16
            mem = (
                g.ggml_tensor_overhead() * (nodes + 4)
                + g.ggml_graph_overhead_custom(n_graph, False)
                + (1 << 16)
            )
            ctx = g.ggml_init(_InitParams(mem, None, True))
            x = g.ggml_new_tensor_2d(ctx, F32, self.k, m)
            outs = [
                g.ggml_mul_mat(ctx, self._w.tensors[r % self.copies], x)
                for r in range(nodes)
            ]
            buf = g.ggml_backend_alloc_ctx_tensors_from_buft(ctx, g.cpu_buft)
            xv = bench_activations(m, self.k)
            g.ggml_backend_tensor_set(x, xv.ctypes.data, 0, xv.nbytes)
            graph = g.ggml_new_graph_custom(ctx, n_graph, False)
            for o in outs:
                g.ggml_build_forward_expand(graph, o)
            try:
                g.ggml_backend_cpu_set_n_threads(backend, threads[-1])
                if g.ggml_backend_graph_compute(backend, graph) != 0:
                    raise RuntimeError("ggml_backend_graph_compute failed")
                y = np.empty((m, self.n), np.float32)
                g.ggml_backend_tensor_get(outs[-1], y.ctypes.data, 0, y.nbytes)
                err = nmse(y, xv.astype(np.float64) @ w_ref.astype(np.float64).T)
                for th in threads:
                    g.ggml_backend_cpu_set_n_threads(backend, th)
                    t = time_calls(
                        [lambda gr=graph: g.ggml_backend_graph_compute(backend, gr)],
                        target_s=target_s,
                        min_reps=10,
                        per_call_div=nodes,
                    )
                    yield {
                        "m": m,
                        "threads": th,
                        "copies": self.copies,
                        "nodes_per_graph": nodes,
                        "weight_bytes": self.nbytes,
                        "nmse": err,
                        **t.as_dict(),
                    }
            finally:
                g.ggml_backend_buffer_free(buf)
                g.ggml_free(ctx)

    def close(self) -> None:
        if self._w.buf:
            self.g.ggml_backend_buffer_free(self._w.buf)
            self.g.ggml_free(self._w.ctx)
            self._w.buf = 0


def method_name(type_name: str, repacked: bool) -> str:
    return f"ggml {type_name} " + ("repacked" if repacked else "plain")


def run(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every point of `spec` for one shape; yields JSON-ready records."""
    try:
        g = Ggml()
    except (GgmlUnavailable, OSError) as err:
        yield {"kind": "unavailable", "why": str(err)}
        return
    yield {
        "kind": "info",
        "version": g.version,
        "repack_buffer": bool(g.repack_buft),
        "avx2": bool(g.ggml_cpu_has_avx2()),
        "avx512": bool(g.ggml_cpu_has_avx512()),
    }
    k, n = spec["k"], spec["n"]
    w = bench_weights(n, k, spec.get("seed", 0))
    # Ternary weights for the TQ types (their format holds only -1, 0, 1 times
    # a scale): the sign of W where |W| exceeds half its sigma.
    w_ternary = (np.sign(w) * (np.abs(w) > 0.01)).astype(np.float32)
    backend = g.ggml_backend_cpu_init()
    try:
        for type_name in spec["types"]:
            src = w_ternary if type_name.startswith("TQ") else w
            for repacked in (False, True):
                if repacked and not g.repack_buft:
                    continue
                for regime in spec["regimes"]:
                    cold = regime == "cold"
                    nbytes = g.ggml_row_size(TYPES[type_name], k) * n
                    copies = copies_for(
                        nbytes, cold, spec.get("cold_bytes", COLD_BYTES)
                    )
                    try:
                        bench = MatmulBench(g, type_name, src, copies, repacked)
                    except ValueError:
                        break  # not repacked by llama.cpp here: plain only
                    base = {
                        "kind": "point",
                        "method": method_name(type_name, repacked),
                        "type": type_name,
                        "bit_class": BIT_CLASS[type_name],
                        "repacked": repacked,
                        "k": k,
                        "n": n,
                        "regime": regime,
                    }
                    try:
                        for rec in bench.run_points(
                            backend,
                            spec["ms"],
                            spec["threads"],
                            copies if cold else HOT_NODES,
                            src,
                            spec["target_s"],
                        ):
                            yield base | rec
                    finally:
                        bench.close()
    finally:
        g.ggml_backend_free(backend)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="ggml mul_mat timings (JSON lines)")
    parser.add_argument("--spec", required=True, help="JSON: k, n, ms, threads, ...")
    opts = parser.parse_args(argv)
    spec = json.loads(opts.spec)
    spec.setdefault("types", list(DEFAULT_TYPES))
    for rec in run(spec):
        print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
