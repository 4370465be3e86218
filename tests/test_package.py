"""Package boundaries: what imports what, and where the modules install."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BLOCK = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError("blocked for this test: " + name)
sys.meta_path.insert(0, Block())
"""


def run(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd
    )


def test_lpcc_and_runtime_import_without_torch_xdsl_llvmlite(tmp_path: Path) -> None:
    code = BLOCK.format(blocked={"torch", "xdsl", "llvmlite", "cupy"}) + (
        "import lpcc, lpcc.runtime, numpy as np\n"
        "t = lpcc.dtype('int3')\n"
        "assert t.unpack(t.pack(t.encode(np.array([-4, 3]))), 2).tolist() == [4, 3]\n"
        "print('ok')"
    )
    out = run(code, tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_subpackages_install_under_lpcc(tmp_path: Path) -> None:
    code = (
        "import importlib.util, lpcc.frontends, lpcc.runtime\n"
        "assert importlib.util.find_spec('runtime') is None\n"
        "assert importlib.util.find_spec('frontends') is None\n"
        "print(lpcc.runtime.__name__, lpcc.frontends.__name__)"
    )
    out = run(code, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["lpcc.runtime", "lpcc.frontends"]


def test_every_package_is_listed_for_installation() -> None:
    """A wheel (not only an editable install) holds every package directory."""
    import tomllib

    root = Path(__file__).resolve().parents[1]
    listed = set(
        tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
            "packages"
        ]
    )
    dirs = {
        "lpcc": root / "lpcc",
        "lpcc.frontends": root / "frontends",
        "lpcc.runtime": root / "runtime",
    }
    found = set()
    for name, base in dirs.items():
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base).parts
            found.add(".".join((name, *rel)))
    assert found - listed == set(), f"add to pyproject packages: {found - listed}"
