"""CUDA backend: CUDA C for lp kernels, compiled by nvcc/NVRTC, checked on the host.

`kernel.py` is the generator contract, `kernels/` the generators (one module
per op family), `lower.py` turns a kernel function into a checked
`CudaKernel`, `nvcc.py`/`nvrtc.py` compile, `runner.py` runs a kernel on the
GPU (CuPy) or on the host emulator (`emu.py`). Nothing here needs a GPU or
CuPy to import. See docs/cuda_backend.md.
"""
