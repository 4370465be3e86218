"""IR-text tests: each tests/filecheck/**/*.mlir file runs its `// RUN:` lines.

As in xDSL and LLVM: `%s` is the file itself; a RUN line passes when its
shell pipeline exits 0 (filecheck exits non-zero on a mismatch).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent / "filecheck"
FILES = sorted(ROOT.rglob("*.mlir"))


def run_lines(path: Path) -> list[str]:
    lines = [
        line.split("RUN:", 1)[1].strip()
        for line in path.read_text().splitlines()
        if line.startswith("// RUN:")
    ]
    assert lines, f"{path} has no RUN line"
    return lines


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(ROOT)) for p in FILES])
def test_filecheck(path: Path) -> None:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    for command in run_lines(path):
        proc = subprocess.run(
            ["bash", "-o", "pipefail", "-c", command.replace("%s", str(path))],
            capture_output=True,
            text=True,
            env=env,
        )
        assert proc.returncode == 0, f"RUN: {command}\n{proc.stdout}\n{proc.stderr}"


def test_files_exist() -> None:
    assert FILES, "no filecheck tests found"
