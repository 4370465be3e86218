"""Passes over the lp dialect: one pass a file, registered here by name.

`get_all_passes()` maps each pass name to a function returning its class
(lazy, as xDSL does, so that naming a pass never imports the others). lpcc's
own low-precision passes join this table as they are written; the generic
xDSL passes below already work on lp IR because every lp op is `Pure`.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module

from xdsl.passes import ModulePass


def _xdsl(name: str) -> Callable[[], type[ModulePass]]:
    def load() -> type[ModulePass]:
        from xdsl.transforms import get_all_passes as xdsl_passes

        return xdsl_passes()[name]()

    return load


def _lpcc(module: str, cls: str) -> Callable[[], type[ModulePass]]:
    """A loader of class `cls` of `lpcc.passes.<module>`, imported when asked."""

    def load() -> type[ModulePass]:
        found: type[ModulePass] = getattr(import_module(f"lpcc.passes.{module}"), cls)
        return found

    return load


def get_all_passes() -> dict[str, Callable[[], type[ModulePass]]]:
    """Pass name -> a function that imports and returns the pass class."""
    return {
        # xDSL's generic cleanups.
        "canonicalize": _xdsl("canonicalize"),
        "cse": _xdsl("cse"),
        "dce": _xdsl("dce"),
        # lpcc's own passes.
        "quantize": _lpcc("quantize", "QuantizeWeights"),
        "dequant-after-group-gemm": _lpcc(
            "dequant_after_group_gemm", "DequantAfterGroupGemm"
        ),
        "select-kernels": _lpcc("select_kernels", "SelectKernels"),
        "fuse-elementwise": _lpcc("fuse_elementwise", "FuseElementwise"),
        "fuse-epilogue": _lpcc("fuse_epilogue", "FuseEpilogue"),
        "fold-constants": _lpcc("fold_constants", "FoldConstants"),
        "fuse-table-precompute": _lpcc("fuse_table_precompute", "FuseTablePrecompute"),
        "lut-gemm": _lpcc("lut_gemm", "LutGemm"),
        "symmetrize-tables": _lpcc("symmetrize_tables", "SymmetrizeTables"),
        "tile": _lpcc("tile", "Tile"),
    }
