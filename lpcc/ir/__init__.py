"""The IR layer: element types, layouts, and the lp dialect.

`dtypes`, `packing` and `layout` are plain NumPy and import fast; the xDSL
dialect lives in `lpcc.ir.dialect` and is imported only by code that builds
or reads IR, so that `lpcc.runtime` never pulls in xDSL.
"""
