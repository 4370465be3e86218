"""Passes over the lp dialect: one pass a file, registered here by name.

`get_all_passes()` maps each pass name to a function returning its class
(lazy, as xDSL does, so that naming a pass never imports the others). lpcc's
own low-precision passes join this table as they are written; the generic
xDSL passes below already work on lp IR because every lp op is `Pure`.
"""

from __future__ import annotations

from collections.abc import Callable

from xdsl.passes import ModulePass


def _xdsl(name: str) -> Callable[[], type[ModulePass]]:
    def load() -> type[ModulePass]:
        from xdsl.transforms import get_all_passes as xdsl_passes

        return xdsl_passes()[name]()

    return load


def _quantize() -> type[ModulePass]:
    from lpcc.passes.quantize import QuantizeWeights

    return QuantizeWeights


def get_all_passes() -> dict[str, Callable[[], type[ModulePass]]]:
    """Pass name -> a function that imports and returns the pass class."""
    return {
        # xDSL's generic cleanups.
        "canonicalize": _xdsl("canonicalize"),
        "cse": _xdsl("cse"),
        "dce": _xdsl("dce"),
        # lpcc's own passes.
        "quantize": _quantize,
    }
