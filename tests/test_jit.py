"""@lpcc.jit: results equal torch eager, per-signature compiles, the disk cache.

Every test points LPCC_CACHE_DIR at its own tmp_path: none touches the real
~/.cache/lpcc. Most use the "reference" target and elementwise ops whose
float32 results are exact (add, mul by a power of two, max, where), so they
are compared with torch eager bit for bit.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

import lpcc

J = importlib.import_module("lpcc.jit")  # the module (lpcc.jit is the decorator)


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    where = tmp_path / "cache"
    monkeypatch.setenv("LPCC_CACHE_DIR", str(where))
    for knob in ("LPCC_ALWAYS_COMPILE", "LPCC_DISABLE_JIT", "LPCC_CPU_ISA"):
        monkeypatch.delenv(knob, raising=False)
    return where


def entries(cache: Path) -> list[Path]:
    return sorted((cache / "jit").glob("*")) if (cache / "jit").exists() else []


def load_source(where: Path, name: str, source: str) -> ModuleType:
    """Import `source` as module `name` from a file in the new directory `where`.

    A real file, so inspect.getsource works; a directory per version, so the
    versions share one module name and differ only in what the test changes.
    """
    where.mkdir(parents=True)
    path = where / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def addmax(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.maximum(x + y, y) * 2.0


def test_results_equal_eager_and_hits_do_not_compile(
    monkeypatch: pytest.MonkeyPatch, cache_dir: Path
) -> None:
    calls = []
    real = lpcc.compile
    monkeypatch.setattr(
        lpcc, "compile", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    f = lpcc.jit(addmax)
    x, y = torch.randn(3, 5), torch.randn(3, 5)
    got = f(x, y)
    assert isinstance(got, torch.Tensor)
    assert torch.equal(got, addmax(x, y))
    assert f.stats["compiles"] == 1 and len(calls) == 1
    x2, y2 = torch.randn(3, 5), torch.randn(3, 5)  # same signature, new values
    assert torch.equal(f(x2, y2), addmax(x2, y2))
    assert f.stats["compiles"] == 1 and len(calls) == 1
    assert f.signatures == [(("float32", (3, 5)), ("float32", (3, 5)))]
    # a new shape is a new signature
    x3, y3 = torch.randn(1, 7), torch.randn(1, 7)
    assert torch.equal(f(x3, y3), addmax(x3, y3))
    assert f.stats["compiles"] == 2 and len(calls) == 2
    assert f.signatures[1] == (("float32", (1, 7)), ("float32", (1, 7)))
    assert len(entries(cache_dir)) == 2
    assert f.__name__ == "addmax" and f.__wrapped__ is addmax


def test_numpy_in_scalars_kwargs_and_nested_outputs() -> None:
    @lpcc.jit
    def g(x, scale, y=None, shift=1.0):
        z = x * scale + shift
        return {"z": z, "pair": (z.sum(dim=0), torch.where(z > 0, z, y))}

    x, y = np.random.randn(4, 2).astype(np.float32), torch.randn(4, 2)
    got = g(x, 4.0, y=y)
    want = g.fn(torch.from_numpy(x), 4.0, y, 1.0)
    assert set(got) == {"z", "pair"} and isinstance(got["pair"], tuple)
    assert torch.equal(got["z"], want["z"])
    assert torch.equal(got["pair"][1], want["pair"][1])
    # a sum over 4 rows: float32 order may differ; |error| <= 3 ulp-ish of sum |z|
    bound = 4 * 3 * np.finfo(np.float32).eps * want["z"].abs().sum(dim=0)
    assert bool(((got["pair"][0] - want["pair"][0]).abs() <= bound).all())
    assert g.stats["compiles"] == 1
    # scalars are specialized on by value
    got = g(x, 0.5, y, 1.0)
    assert torch.equal(got["z"], torch.from_numpy(x) * 0.5 + 1.0)
    assert g.stats["compiles"] == 2
    assert g.signatures[1] == (("float32", (4, 2)), 0.5, ("float32", (4, 2)), 1.0)


def test_scalar_output_keeps_its_shape() -> None:
    f = lpcc.jit(lambda x: (x * 2.0).sum())
    x = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    got = f(x)
    assert got.shape == torch.Size([]) and float(got) == 30.0


def test_warmup_and_ir() -> None:
    f = lpcc.jit(addmax)
    x = torch.ones(2, 2)
    model = f.warmup(x, x)
    assert isinstance(model, lpcc.CompiledModel)
    assert f.stats["compiles"] == 1 and len(f.signatures) == 1
    assert "func.func" in f.ir("import", x, x)
    assert torch.equal(f(x, x), addmax(x, x))
    assert f.stats["compiles"] == 1
    # an entry loaded from disk holds no IR: ir() compiles it again to show it
    g = lpcc.jit(addmax)
    assert "func.func" in g.ir("import", x, x)
    assert g.stats == {"compiles": 1, "disk_loads": 1}


def test_nested_jit_function_is_traced_as_python() -> None:
    inner = lpcc.jit(addmax)
    x = torch.randn(2, 3)
    inner(x, x)  # compiled on its own first

    @lpcc.jit
    def outer(a, b):
        return inner(a, b) + 1.0

    assert torch.equal(outer(x, x), addmax(x, x) + 1.0)
    assert inner.stats["compiles"] == 1 and outer.stats["compiles"] == 1


def test_bad_arguments_and_results_name_the_problem() -> None:
    f = lpcc.jit(addmax)
    with pytest.raises(J.JitError, match=r"argument #1 of addmax is a list"):
        f(torch.ones(2), [1, 2])
    g = lpcc.jit(lambda x: x.shape[0])
    with pytest.raises(lpcc.LpccError, match="returns a int"):
        g(torch.ones(2))
    with pytest.raises(J.JitError, match="plain Python functions"):
        lpcc.jit(torch.nn.Linear(2, 2))


def test_disk_cache_hit_in_a_new_function_object(cache_dir: Path) -> None:
    x, y = torch.randn(2, 3), torch.randn(2, 3)
    a = lpcc.jit(addmax)
    a(x, y)
    b = lpcc.jit(addmax)  # what a new process sees: nothing in memory
    assert torch.equal(b(x, y), addmax(x, y))
    assert b.stats == {"compiles": 0, "disk_loads": 1}


def test_corrupt_entry_warns_and_is_recompiled(cache_dir: Path) -> None:
    x = torch.randn(2, 3)
    lpcc.jit(addmax)(x, x)
    (entry,) = entries(cache_dir)
    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 0xFF
    entry.write_bytes(bytes(data))
    f = lpcc.jit(addmax)
    with pytest.warns(J.JitCacheWarning, match="cannot use the cached program"):
        got = f(x, x)
    assert torch.equal(got, addmax(x, x))
    assert f.stats == {"compiles": 1, "disk_loads": 0}
    g = lpcc.jit(addmax)  # the entry was rewritten whole
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(g(x, x), addmax(x, x))
    assert g.stats == {"compiles": 0, "disk_loads": 1}
    assert entries(cache_dir) == [entry]  # no temp files left behind


def test_unwritable_cache_dir_warns_once_and_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("LPCC_CACHE_DIR", str(blocker / "cache"))  # fails even as root
    monkeypatch.setattr(J, "_warned_dirs", set())
    f = lpcc.jit(addmax)
    with pytest.warns(J.JitCacheWarning, match="cannot write the disk cache"):
        assert torch.equal(
            f(torch.ones(2), torch.ones(2)), addmax(torch.ones(2), torch.ones(2))
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second miss does not warn again
        x = torch.ones(3)
        assert torch.equal(f(x, x), addmax(x, x))
    assert f.stats["compiles"] == 2


def test_always_compile_skips_reading_the_cache(
    cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = torch.randn(4)
    lpcc.jit(addmax)(x, x)
    monkeypatch.setenv("LPCC_ALWAYS_COMPILE", "1")
    f = lpcc.jit(addmax)
    assert torch.equal(f(x, x), addmax(x, x))
    assert f.stats == {"compiles": 1, "disk_loads": 0}


def test_disable_jit_runs_python(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LPCC_DISABLE_JIT", "1")
    seen = []

    @lpcc.jit
    def f(x):
        seen.append(x.shape)
        if x.sum() > 0:  # data-dependent: torch.export could not trace this
            return x + 1.0
        return x - 1.0

    assert torch.equal(f(torch.ones(2)), torch.full((2,), 2.0))
    assert torch.equal(f(-torch.ones(2)), torch.full((2,), -2.0))
    assert len(seen) == 2 and f.stats["compiles"] == 0 and f.signatures == []


def cache_key(f: J.JITFunction, *args: object) -> Path | None:
    return f._cache_path(args, J._tensor_args(args))


def test_key_covers_source_callees_and_captured_values(tmp_path: Path) -> None:
    template = """
        import torch
        W = torch.full((3,), {w})
        LIMIT = {limit}

        def helper(z):
            return torch.clamp(z, max=LIMIT){extra}

        def f(x):
            return helper(x * W){body}
    """
    base = dict(w=2.0, limit=5.0, extra="", body="")
    x = torch.ones(3)

    def key(version: str, **change: object) -> Path | None:
        source = template.format(**{**base, **change})
        mod = load_source(tmp_path / version, "usermod", source)
        return cache_key(lpcc.jit(mod.f), x)

    k0 = key("m0")
    assert k0 is not None and k0 == key("m0b")  # same code and values: same key
    assert key("m1", body=" + 1") != k0  # the function's source
    assert key("m2", extra=" * 1") != k0  # a callee's source
    assert key("m3", limit=6.0) != k0  # a captured constant
    assert key("m4", w=3.0) != k0  # a captured tensor's bytes
    f = lpcc.jit(load_source(tmp_path / "m5", "usermod", template.format(**base)).f)
    assert cache_key(f, torch.ones(4)) != cache_key(f, x)  # the specialization
    assert cache_key(f, x.numpy()) == cache_key(f, x)  # NumPy and torch alike
    g = J.JITFunction(f.fn, {**f.options, "opt_level": 1})
    assert cache_key(g, x) != cache_key(f, x)  # the options
    # a global rebound in the running process: the next miss hashes the new value
    before = cache_key(f, x)
    f.fn.__globals__["W"] = torch.full((3,), 7.0)
    assert cache_key(f, x) != before


def test_closure_tensor_changes_key_and_unknown_capture_is_memory_only() -> None:
    def make(w: torch.Tensor):
        def f(x):
            return x * w

        return lpcc.jit(f)

    x = torch.ones(2)
    assert cache_key(make(torch.ones(2)), x) == cache_key(make(torch.ones(2)), x)
    assert cache_key(make(torch.ones(2)), x) != cache_key(make(torch.zeros(2)), x)

    class Opaque:
        scale = 2.0

    obj = Opaque()

    def h(x):
        return x * obj.scale

    f = lpcc.jit(h)
    with pytest.warns(J.JitCacheWarning, match="'obj' .*memory only"):
        assert cache_key(f, x) is None


SCRIPT = """
import json, sys, torch, lpcc

W = torch.arange(12, dtype=torch.float32).reshape(3, 4) / 4

@lpcc.jit
def f(x, y):
    return torch.maximum(x * W, y) + 0.5

x = torch.linspace(-2, 2, 12).reshape(3, 4)
y = torch.ones(3, 4)
got = f(x, y)
print(json.dumps({"stats": f.stats, "ok": bool(torch.equal(got, f.fn(x, y))),
                  "sum": float(got.sum())}))
"""


@pytest.mark.slow  # three fresh Python processes that import torch: ~10 s
def test_concurrent_processes_then_a_disk_hit(tmp_path: Path, cache_dir: Path) -> None:
    script = tmp_path / "user_fn.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "LPCC_CACHE_DIR": str(cache_dir), "LPCC_PROGRESS": "never"}

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, str(script)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def finish(p: subprocess.Popen[str]) -> dict[str, object]:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        return json.loads(out.strip().splitlines()[-1])

    both = [start(), start()]  # same function, same key, at the same time
    results = [finish(p) for p in both]
    assert all(r["ok"] for r in results)
    assert all(r["stats"]["compiles"] + r["stats"]["disk_loads"] == 1 for r in results)
    (entry,) = entries(cache_dir)  # one whole entry, no temp files
    lpcc.load(entry)  # validates every checksum
    third = finish(start())
    assert third["ok"] and third["stats"] == {"compiles": 0, "disk_loads": 1}
    assert third["sum"] == results[0]["sum"]


def test_cpu_target_and_its_disk_entry(cache_dir: Path) -> None:
    w = torch.randn(8, 5)

    @lpcc.jit(target="cpu")
    def f(x):
        return torch.relu(x @ w) * 2.0

    x = torch.randn(3, 8)
    got = f(x)
    want = f.fn(x)
    # 8-term f32 dot products summed in another order: |error| <= 8 eps sum|x||w|
    bound = 2 * 8 * np.finfo(np.float32).eps * (x.abs() @ w.abs())
    assert bool(((got - want).abs() <= bound).all())
    assert len(entries(cache_dir)) == 1
    g = J.JITFunction(f.fn, f.options)
    assert torch.equal(g(x), got)
    assert g.stats == {"compiles": 0, "disk_loads": 1}
