"""Every knob of lpcc, in one place.

Each knob has a default, a one-line help, and an `LPCC_<NAME>` environment
variable that overrides the default. Code reads knobs with `config.get(name)`
at the moment it needs them (never at import), so a test or a user can scope
a change with `with config.override(progress="never"):`. Nothing else in
lpcc reads the environment.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from lpcc.errors import LpccError


class ConfigError(LpccError, ValueError):
    """A knob with a value it cannot take."""


@dataclass(frozen=True)
class Knob:
    name: str
    default: Any
    parse: Callable[[str], Any]
    help: str

    @property
    def env(self) -> str:
        return f"LPCC_{self.name.upper()}"


def _choice(*options: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in options:
            raise ValueError(f"expected one of {', '.join(options)}")
        return text

    return parse


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("expected an integer >= 1")
    return value


def _nonnegative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("expected an integer >= 0")
    return value


def _flag(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("", "0", "false", "no", "off"):
        return False
    raise ValueError("expected 1 or 0 (or true/false, yes/no, on/off)")


def _archs(text: str) -> tuple[str, ...]:
    low = text.strip().lower()
    if low in ("", "none"):
        return ()
    archs = tuple(a.strip() for a in low.split(","))
    for a in archs:
        if not (a.startswith("sm_") and a[3:].isdigit() and int(a[3:]) >= 70):
            raise ValueError(f"{a!r} is not an architecture like sm_80 (sm_70 on)")
    return archs


KNOBS: dict[str, Knob] = {
    k.name: k
    for k in (
        Knob(
            "progress",
            "auto",
            _choice("auto", "always", "never"),
            "progress bars while compiling: auto (only on a terminal), always, never",
        ),
        Knob(
            "progress_min_layers",
            8,
            _positive_int,
            "show the quantization progress bar from this many layers on",
        ),
        Knob(
            "dump_ir",
            "",
            str,
            "directory to write the IR after every stage to (empty: off)",
        ),
        Knob(
            "cpu_isa",
            "auto",
            _choice("auto", "avx512", "avx2", "generic"),
            "CPU kernel instruction set: auto (the best this CPU has), avx512, "
            "avx2, generic",
        ),
        Knob(
            "num_threads",
            0,
            _nonnegative_int,
            "threads CPU kernels split their work over (0: all cores)",
        ),
        Knob(
            "cuda_device",
            "auto",
            _choice("auto", "gpu", "emulate"),
            "where target='cuda' kernels run: auto (the GPU; an error without "
            "one), gpu, emulate (lpcc's host emulator: slow, for tests)",
        ),
        Knob(
            "cuda_archs",
            ("sm_80", "sm_90"),
            _archs,
            "GPU architectures whose cubins a cuda program carries (nvcc, at "
            "compile time); none: only the CUDA C, compiled by NVRTC when loaded",
        ),
        Knob(
            "logs",
            "",
            str,
            "comma-separated lpcc loggers to show at INFO on stderr (compile, jit; "
            "all: every one), or help: print this list of knobs",
        ),
        Knob(
            "cache_dir",
            "~/.cache/lpcc",
            str,
            "directory of @lpcc.jit's disk cache of compiled programs",
        ),
        Knob(
            "always_compile",
            False,
            _flag,
            "1: @lpcc.jit compiles on every new signature, never reading its disk "
            "cache (it still writes it)",
        ),
        Knob(
            "disable_jit",
            False,
            _flag,
            "1: @lpcc.jit functions run as plain Python (for debugging)",
        ),
    )
}

_overrides: list[dict[str, Any]] = []


def get(name: str) -> Any:
    """The current value of knob `name`: override, else environment, else default."""
    knob = KNOBS.get(name)
    if knob is None:
        raise ConfigError(f"no lpcc knob named {name!r}; knobs: {', '.join(KNOBS)}")
    for scope in reversed(_overrides):
        if name in scope:
            return scope[name]
    text = os.environ.get(knob.env)
    if text is None:
        return knob.default
    try:
        return knob.parse(text)
    except ValueError as err:
        raise ConfigError(f"{knob.env}={text!r}: {err} ({knob.help})") from None


@contextmanager
def override(**values: Any) -> Iterator[None]:
    """Set knobs for the duration of a `with` block."""
    for name in values:
        get(name)  # unknown names fail here, before anything changes
    _overrides.append(values)
    try:
        yield
    finally:
        _overrides.pop()


def describe() -> str:
    """One line per knob: variable, default, help (for `lpcc config`)."""
    return "\n".join(
        f"{k.env:<28} default {k.default!r:<8} {k.help}" for k in KNOBS.values()
    )


LOGGERS = ("compile", "jit")  # the `logging` names under "lpcc."


def setup_logs() -> None:
    """Apply `LPCC_LOGS` (read once, when `lpcc` is imported, as TORCH_LOGS).

    "help" prints every knob to stderr; "compile,jit" (or "all") shows those
    loggers' INFO records on stderr. An unknown name is a warning (an import
    must not fail over a logging switch).
    """
    import logging
    import sys
    import warnings

    text = get("logs").strip()
    if not text:
        return
    if text == "help":
        print(describe(), file=sys.stderr)
        return
    names = [n.strip() for n in text.split(",") if n.strip()]
    if "all" in names:
        names = list(LOGGERS)
    bad = [n for n in names if n not in LOGGERS]
    if bad:
        warnings.warn(
            f"LPCC_LOGS={text!r}: unknown logger {bad[0]!r} ignored; use any of "
            f"{', '.join(LOGGERS)}, all, or help",
            stacklevel=2,
        )
    for name in (n for n in names if n in LOGGERS):
        logger = logging.getLogger(f"lpcc.{name}")
        logger.setLevel(logging.INFO)
        if not any(getattr(h, "_lpcc", False) for h in logger.handlers):
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("[%(name)s] %(message)s"))
            handler._lpcc = True  # type: ignore[attr-defined]
            logger.addHandler(handler)
