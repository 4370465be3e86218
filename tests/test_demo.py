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
    err = float(re.search(r"same dequantized weights: ([\d.e+-]+)", out).group(1))
    assert err < 1e-4
    assert "same tokens as torch" in out
    assert re.search(
        r"time per token .*lpcc [\d.]+ ms, torch eager f32 [\d.]+ ms, torch eager "
        r"bf16 [\d.]+ ms",
        out,
    )
    assert re.search(r"target cpu \((avx512|avx2|generic) kernels", out)
    assert re.search(r"kernels: \d+ native", out)
