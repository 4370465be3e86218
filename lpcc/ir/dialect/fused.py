"""Fused regions: `lp.fused` and `lp.yield` (being written)."""

FUSED_OPS: tuple = ()
