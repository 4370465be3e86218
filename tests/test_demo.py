"""`lpcc demo` (the README's main job) at a tiny size: it runs and reports."""

from __future__ import annotations

import re

import pytest

from lpcc.cli import main


def test_demo_reports_what_it_promises(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["demo", "--layers", "1", "--dim", "32", "--heads", "4", "--vocab", "64"]
    code = main([*argv, "--prompt", "4", "--tokens", "2", "--repeat", "1"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert re.search(r"compile \(.*\): \d+\.\d+ s", out)
    assert re.search(r"fp32 [\d.]+ MiB -> packed [\d.]+ MiB", out)
    rel = re.search(r"same dequantized weights: [\d.e+-]+ \(relative ([\d.e+-]+);", out)
    # int4 takes the LUT kernel, whose activation tables are int8: each entry
    # rounds by up to 1/254 of its group's range, about 1e-2 relative on the
    # logits (measured 1.5e-2 here); f32 activations would give ~1e-6.
    assert rel is not None and float(rel.group(1)) < 5e-2, out
    assert "same tokens as torch" in out
    assert re.search(
        r"time per token .*lpcc [\d.]+ ms, torch eager f32 [\d.]+ ms, torch eager "
        r"bf16 [\d.]+ ms",
        out,
    )
    assert re.search(r"target cpu \((avx512|avx2|generic) kernels", out)
    assert re.search(r"kernels: \d+ native", out)
