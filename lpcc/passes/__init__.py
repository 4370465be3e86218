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


def _dequant_after_group_gemm() -> type[ModulePass]:
    from lpcc.passes.dequant_after_group_gemm import DequantAfterGroupGemm

    return DequantAfterGroupGemm


def _select_kernels() -> type[ModulePass]:
    from lpcc.passes.select_kernels import SelectKernels

    return SelectKernels


def _lut_gemm() -> type[ModulePass]:
    from lpcc.passes.lut_gemm import LutGemm

    return LutGemm


def _symmetrize_tables() -> type[ModulePass]:
    from lpcc.passes.symmetrize_tables import SymmetrizeTables

    return SymmetrizeTables


def _fold_constants() -> type[ModulePass]:
    from lpcc.passes.fold_constants import FoldConstants

    return FoldConstants


def _fuse_table_precompute() -> type[ModulePass]:
    from lpcc.passes.fuse_table_precompute import FuseTablePrecompute

    return FuseTablePrecompute


def _fuse_elementwise() -> type[ModulePass]:
    from lpcc.passes.fuse_elementwise import FuseElementwise

    return FuseElementwise


def _fuse_epilogue() -> type[ModulePass]:
    from lpcc.passes.fuse_epilogue import FuseEpilogue

    return FuseEpilogue


def get_all_passes() -> dict[str, Callable[[], type[ModulePass]]]:
    """Pass name -> a function that imports and returns the pass class."""
    return {
        # xDSL's generic cleanups.
        "canonicalize": _xdsl("canonicalize"),
        "cse": _xdsl("cse"),
        "dce": _xdsl("dce"),
        # lpcc's own passes.
        "quantize": _quantize,
        "dequant-after-group-gemm": _dequant_after_group_gemm,
        "select-kernels": _select_kernels,
        "fuse-elementwise": _fuse_elementwise,
        "fuse-epilogue": _fuse_epilogue,
        "fold-constants": _fold_constants,
        "fuse-table-precompute": _fuse_table_precompute,
        "lut-gemm": _lut_gemm,
        "symmetrize-tables": _symmetrize_tables,
    }
