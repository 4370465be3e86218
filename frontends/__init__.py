"""Frontends (imported as `lpcc.frontends`): the torch.export importer.

`import_module(module, example_inputs)` exports a torch module and imports
it as an lp dialect module; `supported_ops()` lists the ATen ops it converts.
torch is imported on first use, so `import lpcc.frontends` stays cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "FrontendError",
    "Imported",
    "UnsupportedOpError",
    "export",
    "import_exported",
    "import_module",
    "supported_ops",
]


def supported_ops() -> list[str]:
    """Names of the ATen overloads the torch importer converts, sorted."""
    from lpcc.frontends.aten_ops import supported_ops as ops

    return ops()


def __getattr__(name: str) -> Any:
    if name in __all__:
        from lpcc.frontends import torch_export

        return getattr(torch_export, name)
    raise AttributeError(f"module 'lpcc.frontends' has no attribute {name!r}")
