"""Smoke tests of the benchmark harness (benchmarks/_harness.py, gemv.py, _ggml.py).

Toy sizes only, and no speed is asserted: these check that the timing,
rotation, roofline and probe helpers compute what they claim, that each
column of gemv.py multiplies the right matrix (NMSE against the fp32
product), and that bytes per weight are counted as derived by hand.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import _harness
import gemv


def test_time_calls_rotates_over_every_callable() -> None:
    counts = [0, 0, 0]

    def make(i: int):
        def call() -> None:
            counts[i] += 1

        return call

    t = _harness.time_calls(
        [make(0), make(1), make(2)], target_s=0.001, min_reps=30, warmup_s=0.0
    )
    assert t.reps >= 30
    assert 0 <= t.min_us <= t.median_us <= t.p90_us
    # Timed calls go round-robin: equal shares up to one.
    assert max(counts) - min(counts) <= 3
    assert min(counts) >= 10


def test_time_calls_divides_by_nodes() -> None:
    t = _harness.time_calls(
        [lambda: None], target_s=0.0, min_reps=5, max_reps=5, per_call_div=1
    )
    t4 = _harness.time_calls(
        [lambda: sum(range(20000))], target_s=0.0, min_reps=25, per_call_div=4
    )
    assert t.reps == 5
    assert t4.median_us > 0


def test_copies_and_roofline_by_hand() -> None:
    assert _harness.copies_for(10_000_000, cold=False) == 1
    assert _harness.copies_for(10_000_000, cold=True) == 16  # 160 MB / 10 MB
    assert _harness.copies_for(9_000_000, cold=True) == 18  # ceil(17.8)
    assert _harness.copies_for(100, cold=True, cold_bytes=1000) == 10
    # 1e9 bytes at 1 GB/s is one second.
    assert _harness.roofline_us(1e9, 1.0) == pytest.approx(1e6)
    # 4096x4096 at 4.5 bits per weight and 16.2 GB/s: 9,437,184 B -> 582.5 us.
    assert _harness.roofline_us(4096 * 4096 * 4.5 / 8, 16.2) == pytest.approx(
        582.5, abs=0.1
    )


def test_nmse() -> None:
    ref = np.array([3.0, 4.0])
    assert _harness.nmse(ref, ref) == 0
    assert _harness.nmse(np.zeros(2), ref) == 1
    assert _harness.nmse(ref * 1.1, ref) == pytest.approx(0.01)


@pytest.mark.parametrize("threads", [1, 2])
def test_dram_probe_reads_every_byte(threads: int) -> None:
    from lpcc.codegen.llvm.pool import split_rows

    probe = _harness.DramProbe(mib=1)
    rng = np.random.default_rng(threads)
    probe.buffer[:] = rng.integers(0, 256, probe.buffer.size, dtype=np.uint8)
    bw = probe.measure(threads, samples=2, gap_s=0.0)
    assert len(bw.samples) == 2 and all(s > 0 for s in bw.samples)
    words = probe.buffer.view(np.int32)
    per_row = 4096 // 4
    for begin, end in split_rows(probe.rows, threads, 1):
        want = np.bitwise_xor.reduce(words[begin * per_row : end * per_row])
        assert probe.results[begin] == want
    probe.close()


def test_table_aligns_columns() -> None:
    text = _harness.table(["name", "us"], [["a", 1.234], ["long name", 1234.0]])
    lines = text.splitlines()
    assert lines[0] == "name         us"
    assert lines[1] == "---------  ----"
    assert lines[2] == "a          1.23"
    assert lines[3] == "long name  1234"


def test_gemv_options() -> None:
    assert gemv.quant_spec("1", 128) == "uint1-g128"
    assert gemv.quant_spec("4", 64) == "int4-g64"
    assert gemv.quant_spec("f4e2m1", 32) == "f4e2m1-g32"
    assert gemv.ggml_types(["2", "4"]) == ["Q4_0", "Q4_K", "Q2_K", "TQ2_0"]
    a = gemv.parse_args(["--shapes", "256x128,512x64", "--m", "1,16", "--quick"])
    assert a.shapes == [(256, 128), (512, 64)] and a.m == [1, 16]
    assert a.target_s <= 0.3
    with pytest.raises(SystemExit):
        gemv.parse_args(["--bits", "9"])


def test_gemv_toy_run(capsys: pytest.CaptureFixture[str]) -> None:
    """lpcc and torch columns on a 128x64 matrix: right products, right bytes."""
    k, n = 128, 64
    run = gemv.main(
        [
            "--shapes",
            f"{k}x{n}",
            "--m",
            "1",
            "--bits",
            "4",
            "--threads",
            "1",
            "--regimes",
            "cold",
            "--cold-mb",
            "0.05",
            "--columns",
            "lpcc,torch",
            "--target-s",
            "0.005",
            "--probe-mib",
            "4",
            "--quick",
        ]
    )
    out = capsys.readouterr().out
    assert "goals" in out and f"K={k} N={n} M=1, cold" in out
    by = {p.family + ":" + p.method.split(" [")[0]: p for p in run.points}
    lp = by["lpcc:lpcc int4-g128"]
    bf16 = by["torch:torch bf16 F.linear"]
    i4 = by["torch:torch int4pack_mm g128 (bf16 act)"]
    # Bytes per weight, by hand: int4 codes + one f16 scale per 128 weights;
    # torch int4: codes + bf16 scale and zero per 128; bf16: 16 bits.
    assert lp.bpw == pytest.approx(4 + 16 / 128)
    assert i4.bpw == pytest.approx(4 + 32 / 128)
    assert bf16.bpw == 16
    # Cold rotation: enough copies for 0.05 MB.
    assert lp.copies == int(np.ceil(0.05e6 / lp.weight_bytes))
    # Products against the fp32 weights: bf16 rounding (~1e-5), int4 RTN
    # quantization of N(0, sigma^2) weights (~1e-2; 0.05 leaves margin, a wrong
    # product gives ~1 or more).
    assert bf16.nmse < 1e-4
    assert lp.nmse < 0.05
    assert i4.nmse < 0.05


def test_ggml_column_when_installed() -> None:
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python (the bench extra) is not installed")
    import _ggml  # not `import llama_cpp`: see _ggml.Ggml

    g = _ggml.Ggml()
    k, n = 256, 64
    w = _harness.bench_weights(n, k)
    backend = g.ggml_backend_cpu_init()
    try:
        layouts = [False] + ([True] if g.repack_buft and g.ggml_cpu_has_avx2() else [])
        for repacked in layouts:  # llama.cpp repacks Q4_0 on every AVX2 CPU
            bench = _ggml.MatmulBench(g, "Q4_0", w, copies=2, repacked=repacked)
            try:
                # Q4_0: blocks of 32 weights in 18 bytes (f16 scale + 16 B codes).
                assert bench.nbytes == n * k // 32 * 18
                (rec,) = bench.run_points(backend, [3], [1], 2, w, target_s=0.001)
                assert rec["m"] == 3 and rec["copies"] == 2
                assert rec["nmse"] < 0.05  # Q4_0 RTN: ~8e-3 on N(0, sigma^2)
            finally:
                bench.close()
        if not g.ggml_cpu_has_avx512() and g.repack_buft:
            # llama.cpp repacks Q2_K only with AVX-512: refused, not crashed.
            with pytest.raises(ValueError):
                _ggml.MatmulBench(g, "Q2_K", w, copies=1, repacked=True)
    finally:
        g.ggml_backend_free(backend)


def test_point_stat_and_rates_by_hand() -> None:
    t = _harness.Timing(median_us=200.0, min_us=100.0, p90_us=300.0, reps=10)
    p = gemv.Point("lpcc", "x", 4, 4096, 4096, 1, 1, "cold", 8_650_752, 19, t)
    assert p.bpw == pytest.approx(4.125)  # 8,650,752 B * 8 / 4096^2
    assert p.us == 200.0
    assert p.gflops == pytest.approx(2 * 4096 * 4096 / 200e-6 / 1e9)
    p.stat = "min"
    assert p.us == 100.0
    run = gemv.Run(bandwidth={1: [10.0, 12.0, 20.0]})
    assert run.bw(1) == 12.0 and run.bw(2) is None
    run.stat = "min"
    assert run.bw(1) == 20.0  # fastest probe sample goes with fastest calls


def test_gemv_lpcc_kernel_kinds_side_by_side() -> None:
    """--lpcc-kernels measures each kind as its own method, each a right product."""
    run = gemv.main(
        [
            "--shapes",
            "128x64",
            "--m",
            "1",
            "--bits",
            "4,f4e2m1",
            "--threads",
            "1",
            "--regimes",
            "hot",
            "--columns",
            "lpcc",
            "--lpcc-kernels",
            "auto,lut,dequant",
            "--target-s",
            "0.005",
            "--probe-mib",
            "4",
            "--quick",
        ]
    )
    methods = sorted(p.method.split(" [")[0] for p in run.points)
    assert methods == [
        "lpcc f4e2m1-g128",
        "lpcc f4e2m1-g128 dequant",  # no "lut": float codes have no planes
        "lpcc int4-g128",
        "lpcc int4-g128 dequant",
        "lpcc int4-g128 lut",
    ]
    assert all(p.nmse is not None and p.nmse < 0.05 for p in run.points)


def test_decode_toy_run(capsys: pytest.CaptureFixture[str]) -> None:
    import decode

    rows = decode.main(
        [
            "--layers",
            "1",
            "--dim",
            "64",
            "--hidden",
            "96",
            "--vocab",
            "50",
            "--heads",
            "4",
            "--kv-heads",
            "2",
            "--bits",
            "4",
            "--group",
            "32",
            "--repeat",
            "1",
        ]
    )
    names = [r[0] for r in rows]
    assert names[:2] == ["torch f32 eager", "torch bf16 eager"]
    assert names[2].startswith("lpcc int4-g32") and len(rows) == 3
    assert all(t > 0 for _, _, t in rows)
    assert "tok/s" in capsys.readouterr().out


def test_gpu_gemm_without_a_gpu_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    import gpu_gemm

    from lpcc.codegen.cuda.runner import gpu_available

    if gpu_available():
        pytest.skip("this machine has a GPU: the benchmark would run")
    assert gpu_gemm.main(["--quick"]) == 2
    assert "no GPU" in capsys.readouterr().err


def _listing(lines: list[str]) -> str:
    """A cuobjdump-style listing of function `f`, one instruction per 0x10."""
    body = "\n".join(
        f"        /*{16 * i:04x}*/   {t} ;   /* 0x0 */" for i, t in enumerate(lines)
    )
    return f"        Function : f\n{body}\n"


def test_cuda_sass_walk_follows_one_lane_by_hand() -> None:
    """The path walk on a hand-made listing: a guard falls through, the
    remainder dispatch jumps to the unrolled staging loop (2 STS per pass, so
    4 trips = 2 passes), the outer back edge ends the iteration."""
    import cuda_sass

    text = _listing(
        [
            "LDG.E.128 R4, [R2.64]",  # 0x00 outer head
            "@P0 BRA 0xa0",  # 0x10 guard: falls through
            "@!P1 BRA 0x40",  # 0x20 remainder dispatch: taken (<= head 0x50)
            "STS.64 [R0], R4",  # 0x30 remainder: skipped
            "ISETP.GE.AND P0, PT, R1, 0x4, PT",  # 0x40
            "F2FP.PACK_AB R6, R5, R4",  # 0x50 staging head
            "STS.64 [R0], R6",  # 0x60
            "STS.64 [R0+0x8], R6",  # 0x70
            "@!P0 BRA 0x50",  # 0x80 staging back edge
            "LOP3.LUT R8, R4, 0xf000f, R9, 0xea, !PT",  # 0x90
            "HFMA2 R8, R8, R10.H0_H0, -72, -72",  # 0xa0
            "HMMA.16816.F32 R12, R16, R8, R12",  # 0xb0
            "IADD3 R9, R9, -0x8080808, RZ",  # 0xc0 byte-splat bias: decode
            "IADD3 R1, R1, 0x1, RZ",  # 0xd0 loop counter: no class
            "BRA 0x0",  # 0xe0 outer back edge
            "BRA 0xf0",  # 0xf0 trailing self-branch: ignored
        ]
    )
    insns = cuda_sass.kernel_listing(text, "f")
    assert cuda_sass.loops(insns) == [(0x50, 0x80), (0x0, 0xE0)]
    c = cuda_sass.walk(insns, 0x0, 0xE0, trips=4)
    # path: 0x00-0x20 (3), 0x40 (1), staging 4 insns x 2 passes (8), 0x90-0xe0 (6)
    assert c["all"] == 3 + 1 + 8 + 6
    assert c["stage"] == 8
    assert c["decode"] == 3 and c["mma"] == 1 and c["ld"] == 1
    assert c["smem"] == 0 and c["cvt"] == 0  # staging STS/F2FP count as stage
    with pytest.raises(SystemExit):  # 3 trips are not whole passes of 2
        cuda_sass.walk(insns, 0x0, 0xE0, trips=3)


def test_cuda_sass_tc_kernel_counts(capsys: pytest.CaptureFixture[str]) -> None:
    """One small tensor-core kernel through nvcc: M=16 is one m16 tile, so per
    128-k chunk a lane issues 8 k-steps x 2 n8 tiles = 16 HMMA for its 64
    weights (0.25/w); the int4 decode is at least one lop3 + one hfma2 per
    pair (1.0/w). Full chunks stage A with straight-line code: each of the
    128 threads converts 16 rows x 128 k / 128 = 16 activations, 8 F2FP
    packs, and stores them as 4 eight-byte STS, beside the 8 ldmatrix.x4
    (one per k-step): no staging loop is left."""
    import cuda_sass

    argv = "--kernel tc --arch sm_80 --k 256 --n 64 --m 16 --widths int4 --jobs 1"
    out = cuda_sass.main(argv.split(" "))
    (row,) = out["tc"]
    assert row.label == "int4" and row.per == 64
    assert row.counts["mma"] == 16
    assert 1.0 <= row.counts["decode"] / row.per < 1.5
    assert row.counts["stage"] == 0
    assert row.counts["cvt"] == 8 and row.counts["smem"] == 8 + 4
    assert "| int4 |" in capsys.readouterr().out
