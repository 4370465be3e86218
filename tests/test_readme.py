"""The README's quick start runs as written."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

README = Path(__file__).parent.parent / "README.md"


BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_has_python_blocks() -> None:
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_quick_start_python_block_runs_and_prints_what_it_says(
    code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LPCC_CACHE_DIR", str(tmp_path))  # @lpcc.jit's disk cache
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(README), "exec"), {})
    printed = out.getvalue().splitlines()
    promised = [
        line.split("# ", 1)[1].strip()
        for line in code.splitlines()
        if line.startswith("print(") and "# " in line
    ]
    assert promised
    for want in promised:
        assert any(got.strip() == want for got in printed), (want, printed)


CLI_BLOCK = next(
    b
    for b in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)
    if b.startswith("lpcc compile")
)


@pytest.mark.slow
def test_readme_command_line_block_runs(tmp_path: Path) -> None:
    """Each line of the README's `lpcc` shell example, in a fresh directory."""
    import os
    import subprocess
    import sys

    import numpy as np

    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    for line in CLI_BLOCK.strip().splitlines():
        cmd = line.split("  #", 1)[0].strip()
        done = subprocess.run(
            cmd, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, (cmd, done.stderr[-2000:])
    y = np.load(tmp_path / "y.npy")
    assert y.shape == (3, 8) and np.isfinite(y).all()
    dumped = {p.name for p in (tmp_path / "ir").iterdir()}
    assert {"000_import.mlir", "001_quantize.mlir", "program.txt", "repro.py"} <= dumped
    assert any((tmp_path / "ir" / "kernels").glob("*.ll"))  # cpu kernels' LLVM IR
