"""CUDA C kernel source generators (one module per kernel family)."""
