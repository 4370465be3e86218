"""CUDA backend: CUDA C for lp kernels, compiled by NVRTC/nvcc, checked on the host.

`nvcc` compiles generated CUDA C to cubins/PTX and reads ptxas' register and
spill report and the SASS; `kernels/` generates the kernels (first: the
W{1..8}A16 GEMV); `emu` runs the same CUDA C source on the CPU (g++ and a
header of our own), so the kernels' logic is tested on machines without a GPU.
Nothing here needs a GPU or cupy to import. Wiring into `target="cuda"` is
issue 7's next step.
"""
