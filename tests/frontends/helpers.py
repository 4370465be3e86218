"""check_module: export + import + verify + interpret, compared with torch eager.

The reference is torch eager on the same inputs; the interpreter
(`lpcc.ir.interp`) runs the imported module on NumPy copies of them.
Relative error = max|got - want| / max(max|want|, tiny), per output.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from lpcc.frontends.torch_export import Imported, import_module

from lpcc.ir import interp
from lpcc.ir.dialect import parse_module, print_module, verify_module


class Fn(torch.nn.Module):
    """A module whose forward is `fn` (one-line op tests)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *args: torch.Tensor) -> Any:
        return self.fn(*args)


def to_numpy(t: torch.Tensor) -> np.ndarray:
    if t.dtype in (torch.float16, torch.bfloat16):
        return t.float().numpy()
    return t.numpy()


def rel_error(got: np.ndarray, want: np.ndarray) -> float:
    got64, want64 = got.astype(np.float64), want.astype(np.float64)
    assert got64.shape == want64.shape, (got64.shape, want64.shape)
    same = (got64 == want64) | (np.isnan(got64) & np.isnan(want64))
    with np.errstate(invalid="ignore"):  # inf - inf where both are inf
        diff = np.where(same, 0.0, np.abs(got64 - want64))
    scale = max(
        float(np.nanmax(np.abs(np.where(np.isinf(want64), 0, want64)), initial=0)),
        1e-30,
    )
    return float(np.max(diff, initial=0.0)) / scale


def check_outputs(got: Sequence[np.ndarray], want: Any, rtol: float) -> None:
    wants = list(want) if isinstance(want, tuple | list) else [want]
    assert len(got) == len(wants)
    for i, (g, w) in enumerate(zip(got, wants, strict=True)):
        w_np = to_numpy(w)
        assert g.shape == w_np.shape, f"output {i}: shape {g.shape} vs {w_np.shape}"
        if w.dtype == torch.bool or not w.dtype.is_floating_point:
            np.testing.assert_array_equal(g, w_np, err_msg=f"output {i}")
        else:
            assert np.array_equal(np.isinf(g), np.isinf(w_np)), f"output {i}: inf"
            err = rel_error(g, w_np)
            assert err <= rtol, f"output {i}: relative error {err:.3g} > {rtol}"


def check_module(
    model: torch.nn.Module | Callable[..., Any],
    inputs: Sequence[torch.Tensor],
    *,
    dynamic_shapes: Any = None,
    rtol: float = 1e-4,
    runs: Sequence[Sequence[torch.Tensor]] = (),
) -> Imported:
    """Import `model`, check it round-trips as text, and matches torch eager.

    `runs` are further input sets (e.g. other sequence lengths for a
    dynamic-shape export); every run is compared with torch eager.
    """
    module = model if isinstance(model, torch.nn.Module) else Fn(model)
    imported = import_module(module, tuple(inputs), dynamic_shapes=dynamic_shapes)
    verify_module(imported.module)
    text = print_module(imported.module)
    assert print_module(parse_module(text)) == text
    for args in (inputs, *runs):
        with torch.no_grad():
            want = module(*args)
        got = interp.run_module(imported.module, [to_numpy(a) for a in args])
        check_outputs(got, want, rtol)
    return imported


class Batch(torch.nn.Module):
    """Many one-op cases in one module, so one export covers them all."""

    def __init__(self, fns: Sequence[Callable[..., Any]], counts: Sequence[int]):
        super().__init__()
        self.fns = list(fns)
        self.counts = list(counts)
        self.mods = torch.nn.ModuleList(
            f for f in fns if isinstance(f, torch.nn.Module)
        )

    def forward(self, *flat: torch.Tensor) -> Any:
        outs, i = [], 0
        for fn, n in zip(self.fns, self.counts, strict=True):
            outs.append(fn(*flat[i : i + n]))
            i += n
        return tuple(outs)


def run_batch(
    cases: Sequence[tuple[str, Callable[..., Any], Sequence[torch.Tensor]]],
) -> dict[str, list[np.ndarray]] | None:
    """Import and interpret every case in one module: name -> its outputs.

    Returns None if the batch does not import or run; callers then check
    each case on its own, which names the failing op.
    """
    fns = [c[1] for c in cases]
    flat = [x for c in cases for x in c[2]]
    model = Batch(fns, [len(c[2]) for c in cases])
    with torch.no_grad():
        eager = model(*flat)
    sizes = [len(torch.utils._pytree.tree_leaves(e)) for e in eager]
    try:
        imported = import_module(model, tuple(flat))
        verify_module(imported.module)
        got = interp.run_module(imported.module, [to_numpy(x) for x in flat])
    except Exception:
        return None
    out, i = {}, 0
    for (name, _, _), n in zip(cases, sizes, strict=True):
        out[name] = got[i : i + n]
        i += n
    return out if i == len(got) else None
