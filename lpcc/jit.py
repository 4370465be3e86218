"""`@lpcc.jit`: compile a plain Python function over tensors on its first call.

    @lpcc.jit(quant=None, target="cpu")
    def f(x, y):
        return torch.relu(x @ W + y)

    f(x, y)  # traces f with torch.export (via lpcc.compile), compiles, runs
    f(x, y)  # same shapes and dtypes: runs the compiled program directly

The shape is Triton's `@triton.jit`: compile lazily per *specialization*
(each tensor argument's shape and dtype, each plain Python scalar's value,
plus the target and options), list them in `.signatures`, compile ahead with
`.warmup(*args)`, look inside with `.ir(stage, *args)`.

Compiled programs are also kept on disk, under the `cache_dir` knob
(`LPCC_CACHE_DIR`, default `~/.cache/lpcc`), as saved program files
(`lpcc.runtime.format`, never pickle) named by a SHA-256 over everything the
program depends on: the lpcc version and the text of lpcc's own sources, the
function's source and that of the user functions it calls (followed by name
through its globals and closure, recursively), the values of the constants,
arrays, tensors and modules it captures, the options, the specialization
and, for the "cpu" target, the instruction set the kernels are built for.
A change to any of them is a new entry, never a stale hit. A function that
captures an object the key cannot fingerprint is cached in memory only (with
a warning naming the object), because a stale hit would be a wrong answer.

Writes are atomic (a temporary file in the same directory, then
`os.replace`), so processes compiling the same function at once both
succeed and leave one whole entry. A corrupt or unreadable entry is
recompiled and rewritten, with a warning; an unwritable directory falls back
to memory, with one warning. `LPCC_ALWAYS_COMPILE=1` compiles without
reading the disk cache (and still writes it); `LPCC_DISABLE_JIT=1` runs the
Python function as it is.

As in Numba, the in-memory cache freezes what the function captured at its
first compile: rebinding a global later is seen by a new process (its key
changes), not by the running one.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import importlib.util
import inspect
import logging
import marshal
import os
import sys
import threading
import types
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from lpcc import config
from lpcc.errors import LpccError

log = logging.getLogger("lpcc.jit")

__all__ = ["JITFunction", "JitCacheWarning", "JitError", "jit"]

_OPTION_NAMES = ("quant", "target", "opt_level", "kernels")
_SCALARS = (bool, int, float, str, type(None))
# Top-level packages whose functions are library code, not the user's: their
# source is covered by lpcc's version/source hash or is not lpcc's to track.
_LIBRARY_ROOTS = frozenset({"torch", "numpy", "lpcc", "builtins", "_operator"})
_SOURCE_SUFFIXES = (".py", ".ll", ".c", ".h", ".cu", ".cuh", ".json")


class JitError(LpccError, TypeError):
    """A `@lpcc.jit` function called with something it cannot specialize on."""


class JitCacheWarning(UserWarning):
    """The disk cache could not be used (corrupt entry, unwritable directory)."""


# -- the decorator -----------------------------------------------------------------


def jit(
    fn: Callable[..., Any] | None = None,
    *,
    quant: Any = None,
    target: str = "reference",
    opt_level: int = 2,
    kernels: dict[str, str] | None = None,
) -> Any:
    """Compile `fn` with `lpcc.compile` on first call per shape/dtype signature.

    Use bare (`@lpcc.jit`) or with `lpcc.compile`'s options
    (`@lpcc.jit(quant="int4-g32", target="cpu")`). Tensor arguments (torch,
    or NumPy arrays, converted with `torch.from_numpy`) become the program's
    inputs; plain Python scalars are baked in by value.
    """
    options = {
        "quant": quant,
        "target": target,
        "opt_level": opt_level,
        "kernels": dict(kernels) if kernels else None,
    }

    def wrap(f: Callable[..., Any]) -> JITFunction:
        return JITFunction(f, options)

    if fn is None:
        return wrap
    if not callable(fn):
        raise JitError(
            f"lpcc.jit: expected a function to decorate, got {type(fn).__name__}; "
            "use @lpcc.jit or @lpcc.jit(target=..., quant=...)"
        )
    return wrap(fn)


_tracing = 0  # > 0 while a JITFunction is being traced: nested ones run as Python


class JITFunction:
    """A function compiled per specialization; call it like the function."""

    def __init__(self, fn: Callable[..., Any], options: dict[str, Any]) -> None:
        if not isinstance(fn, types.FunctionType):
            raise JitError(
                f"lpcc.jit decorates plain Python functions, got "
                f"{type(fn).__name__}; for a torch.nn.Module use lpcc.compile"
            )
        from lpcc.api import _check_target

        _check_target(options["target"])
        self.fn = fn
        self.options = options
        self.stats = {"compiles": 0, "disk_loads": 0}  # misses only: hits stay lean
        self._entries: dict[tuple[Any, ...], _Entry] = {}
        self._lock = threading.Lock()
        self._signature = inspect.signature(fn)
        self._warned_unhashable = False
        functools.update_wrapper(self, fn)

    # -- calling ------------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs:
            args = self._bind(args, kwargs)
        if _tracing or config.get("disable_jit"):
            return self.fn(*args)
        key = _spec_key(args, self.fn)
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entry(key, args)
        return entry.run(args)

    def warmup(self, *args: Any, **kwargs: Any) -> Any:
        """Compile (or load from disk) for these arguments without running.

        Returns the `lpcc.CompiledModel` the calls with this signature run.
        """
        if kwargs:
            args = self._bind(args, kwargs)
        key = _spec_key(args, self.fn)
        entry = self._entries.get(key) or self._entry(key, args)
        return entry.model

    def ir(self, stage: str = "import", *args: Any, **kwargs: Any) -> str:
        """The IR text after `stage` for this signature (see CompiledModel.ir).

        A program loaded from the disk cache holds no IR, so this compiles the
        function again (without touching the cache) to print it.
        """
        if kwargs:
            args = self._bind(args, kwargs)
        key = _spec_key(args, self.fn)
        entry = self._entries.get(key) or self._entry(key, args)
        if not entry.model.stages:
            tensors = _tensor_args(args)
            entry.model, _ = self._compile(args, tensors)
        return entry.model.ir(stage)

    @property
    def signatures(self) -> list[tuple[Any, ...]]:
        """The compiled specializations, one tuple per signature.

        Each item describes one argument: `("float32", (2, 3))` for a tensor
        (its dtype and shape), the value itself for a Python scalar.
        """
        return [_describe(key) for key in self._entries]

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items() if v)
        return (
            f"<lpcc.jit {self.fn.__qualname__} ({opts}), {len(self._entries)} compiled>"
        )

    # -- compiling ----------------------------------------------------------------
    def _bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        try:
            bound = self._signature.bind(*args, **kwargs)
        except TypeError as err:
            raise JitError(f"{self.fn.__qualname__}(): {err}") from None
        bound.apply_defaults()
        if bound.kwargs:
            raise JitError(
                f"{self.fn.__qualname__}(): keyword-only arguments "
                f"({', '.join(bound.kwargs)}) are not supported by lpcc.jit; make "
                "them positional-or-keyword"
            )
        return tuple(bound.args)

    def _entry(self, key: tuple[Any, ...], args: tuple[Any, ...]) -> _Entry:
        """The miss path: disk cache, else compile (one thread at a time)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                return entry
            tensors = _tensor_args(args)
            path = self._cache_path(args, tensors)
            model = outputs = None
            if path is not None and not config.get("always_compile"):
                loaded = _load_entry(path, self.fn.__qualname__)
                if loaded is not None:
                    model, outputs = loaded
                    self.stats["disk_loads"] += 1
                    log.info("%s: loaded %s", self.fn.__qualname__, path)
            if model is None:
                model, outputs = self._compile(args, tensors)
                if path is not None:
                    _store_entry(path, model)
            entry = _Entry(model, outputs, args)
            self._entries[key] = entry
            return entry

    def _compile(self, args: tuple[Any, ...], tensors: list[Any]) -> tuple[Any, Any]:
        import lpcc

        global _tracing
        module, box = _wrapper(self.fn, args)
        # a view as example input can leave an unused symbol behind in the
        # export (its base's size); a fresh copy traces as the plain tensor it is
        examples = tuple(t.clone() if t._is_view() else t for t in tensors)
        _tracing += 1
        try:
            model = lpcc.compile(module, examples, **self.options)
        finally:
            _tracing -= 1
        self.stats["compiles"] += 1
        outputs = box["outputs"]
        model.program.meta["jit"] = {
            "function": self.fn.__qualname__,
            "outputs": outputs,
        }
        log.info("%s: compiled %s", self.fn.__qualname__, _describe_args(args))
        return model, outputs

    def _cache_path(self, args: tuple[Any, ...], tensors: list[Any]) -> Path | None:
        """The disk entry for this call, or None if this function is memory-only."""
        # hashed on every miss, not once: a global rebound since the last
        # compile must not file the new program under the old values' key
        fp = _Fingerprint()
        fp.function(self.fn)
        if fp.unhashable:
            if not self._warned_unhashable:
                self._warned_unhashable = True
                what = ", ".join(fp.unhashable[:3])
                warnings.warn(
                    f"lpcc.jit: {self.fn.__qualname__} captures {what}, which the "
                    "disk cache cannot fingerprint; its compiled programs are kept "
                    "in memory only. Pass such values as arguments, or make them "
                    "constants, arrays, tensors or modules.",
                    JitCacheWarning,
                    stacklevel=4,
                )
            return None
        h = hashlib.sha256()
        for part in (
            _lpcc_digest(),
            fp.hexdigest(),
            _options_text(self.options),
            _describe_args(args),
            _target_features(self.options["target"]),
        ):
            h.update(part.encode())
            h.update(b"\0")
        name = "".join(c if c.isalnum() or c in "_-" else "_" for c in self.fn.__name__)
        return _cache_root() / f"{name[:40]}-{h.hexdigest()}.lpcc"


class _Entry:
    """One compiled specialization: the model and how to call and unflatten."""

    def __init__(self, model: Any, outputs: Any, args: tuple[Any, ...]) -> None:
        self.model = model
        self.outputs = outputs
        self._positions = tuple(
            i for i, a in enumerate(args) if not isinstance(a, _SCALARS)
        )
        self._numpy = any(isinstance(args[i], np.ndarray) for i in self._positions)
        self._scalar_out = tuple(
            i for i, s in enumerate(model.program.outputs) if not s.shape
        )
        self._single = outputs == "T"
        self._torch_out = not self._positions  # no tensor in: convert outputs here

    def run(self, args: tuple[Any, ...]) -> Any:
        if self._numpy:
            import torch

            ts = [
                torch.from_numpy(a) if type(a) is np.ndarray else a
                for a in (args[i] for i in self._positions)
            ]
        else:
            ts = [args[i] for i in self._positions]
        out = self.model(*ts)
        if self._scalar_out or self._torch_out:
            out = self._fix(out)
        if self._single:
            return out
        return _unflatten(self.outputs, iter(out if isinstance(out, tuple) else (out,)))

    def _fix(self, out: Any) -> Any:
        """0-d outputs back to 0-d, NumPy outputs (no tensor inputs) to torch."""
        import torch

        flat = list(out) if isinstance(out, tuple) else [out]
        for i, y in enumerate(flat):
            if isinstance(y, np.ndarray):
                y = torch.from_numpy(np.array(y))
            if i in self._scalar_out:
                y = y.reshape(())
            flat[i] = y
        return tuple(flat) if isinstance(out, tuple) else flat[0]


def _wrapper(
    fn: Callable[..., Any], args: tuple[Any, ...]
) -> tuple[Any, dict[str, Any]]:
    """A torch Module whose forward(*tensors) is fn(args, tensors put in place).

    Also returns the box that receives the output structure while tracing (a
    closure, not a module attribute: torch.export restores those).
    """
    import torch

    box: dict[str, Any] = {}
    positions = [i for i, a in enumerate(args) if not isinstance(a, _SCALARS)]

    def record(structure: Any) -> None:
        box["outputs"] = structure

    class Wrapper(torch.nn.Module):
        def forward(self, *tensors: Any) -> Any:
            full = list(args)
            for i, t in zip(positions, tensors, strict=True):
                full[i] = t
            structure, leaves = _flatten(fn(*full), fn.__qualname__)
            record(structure)
            return tuple(leaves)

    Wrapper.__name__ = Wrapper.__qualname__ = f"jit({fn.__qualname__})"
    # name the program's inputs after fn's parameters (torch.export reads this)
    params = _params(fn)
    if len(params) >= len(args) and all(
        p.kind is p.POSITIONAL_OR_KEYWORD or p.kind is p.POSITIONAL_ONLY
        for p in params[: len(args)]
    ):
        names = [params[i].name for i in positions]
    else:  # *args: positions stand in for names
        names = [f"arg{i}" for i in positions]
    Wrapper.forward.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        + [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names]
    )
    return Wrapper(), box


def _params(fn: Callable[..., Any]) -> list[inspect.Parameter]:
    try:
        return list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return []


# -- specialization keys -------------------------------------------------------------


_Tensor: Any = None  # torch.Tensor once a miss imported torch (keeps import light)


def _spec_key(args: tuple[Any, ...], fn: Callable[..., Any]) -> tuple[Any, ...]:
    """Per argument: (shape, dtype) of a tensor or array, (type, value) of a scalar.

    Runs on every call: no hashing of data, no torch import, one type test
    for a plain torch tensor.
    """
    tensor = _Tensor
    return tuple(
        [
            (a.shape, a.dtype) if type(a) is tensor else _key_item(a, fn, i)
            for i, a in enumerate(args)
        ]
    )


def _key_item(a: Any, fn: Callable[..., Any], i: int) -> tuple[Any, ...]:
    t = type(a)
    if t in _SCALARS:
        return (t, a)
    if t is np.ndarray:
        return (a.shape, a.dtype, 0)
    shape = getattr(a, "shape", None)
    dt = getattr(a, "dtype", None)
    if shape is None or dt is None or not t.__module__.startswith("torch"):
        raise JitError(
            f"lpcc.jit: argument #{i} of {fn.__qualname__} is a {t.__name__}; "
            "pass torch tensors, NumPy arrays or Python scalars (bool, int, "
            "float, str, None)"
        )
    return (shape, dt)


def _tensor_args(args: tuple[Any, ...]) -> list[Any]:
    global _Tensor
    import torch

    _Tensor = torch.Tensor
    return [
        torch.from_numpy(a) if isinstance(a, np.ndarray) else a
        for a in args
        if not isinstance(a, _SCALARS)
    ]


def _describe(key: tuple[Any, ...]) -> tuple[Any, ...]:
    out: list[Any] = []
    for item in key:
        if isinstance(item[0], type):
            out.append(item[1])
        else:
            dt = item[1]
            name = (
                dt.name if isinstance(dt, np.dtype) else str(dt).removeprefix("torch.")
            )
            out.append((name, tuple(item[0])))
    return tuple(out)


def _describe_args(args: tuple[Any, ...]) -> str:
    """The specialization as stable text (NumPy and torch alike: torch's names)."""
    parts = []
    for a in args:
        if isinstance(a, _SCALARS):
            parts.append(f"{type(a).__name__}={a!r}")
        else:
            if isinstance(a, np.ndarray):
                import torch

                a = torch.from_numpy(a)
            parts.append(f"{str(a.dtype).removeprefix('torch.')}{list(a.shape)}")
    return "(" + ", ".join(parts) + ")"


def _options_text(options: dict[str, Any]) -> str:
    parts = []
    for name in _OPTION_NAMES:
        value = options[name]
        if isinstance(value, dict):
            value = sorted(value.items())
        parts.append(f"{name}={value!r}")
    return ",".join(parts)


# -- outputs -----------------------------------------------------------------------


def _flatten(result: Any, where: str) -> tuple[Any, list[Any]]:
    """(structure, tensors): "T" for a tensor, ["tuple"|"list", [...]], ["dict", ...].

    The structure is JSON, so it is saved in the program's metadata and a
    program loaded from disk returns what the function returns.
    """
    import torch

    leaves: list[Any] = []

    def walk(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            leaves.append(x)
            return "T"
        if type(x) in (tuple, list):
            return [type(x).__name__, [walk(v) for v in x]]
        if type(x) is dict and all(isinstance(k, str) for k in x):
            return ["dict", [[k, walk(v)] for k, v in x.items()]]
        raise JitError(
            f"lpcc.jit: {where} returns a {type(x).__name__}; return tensors, or "
            "tuples, lists or str-keyed dicts of tensors"
        )

    return walk(result), leaves


def _unflatten(structure: Any, leaves: Iterator[Any]) -> Any:
    if structure == "T":
        return next(leaves)
    kind, items = structure
    if kind == "dict":
        return {k: _unflatten(s, leaves) for k, s in items}
    values = [_unflatten(s, leaves) for s in items]
    return tuple(values) if kind == "tuple" else values


def _valid_structure(s: Any) -> bool:
    if s == "T":
        return True
    if not (isinstance(s, list) and len(s) == 2 and isinstance(s[1], list)):
        return False
    if s[0] in ("tuple", "list"):
        return all(_valid_structure(v) for v in s[1])
    if s[0] == "dict":
        return all(
            isinstance(kv, list)
            and len(kv) == 2
            and isinstance(kv[0], str)
            and _valid_structure(kv[1])
            for kv in s[1]
        )
    return False


def _count_leaves(s: Any) -> int:
    if s == "T":
        return 1
    if s[0] == "dict":
        return sum(_count_leaves(v) for _, v in s[1])
    return sum(_count_leaves(v) for v in s[1])


# -- the disk cache ------------------------------------------------------------------

_warned_dirs: set[str] = set()


def _cache_root() -> Path:
    return Path(os.path.expanduser(config.get("cache_dir"))) / "jit"


def _load_entry(path: Path, qualname: str) -> tuple[Any, Any] | None:
    """(model, output structure) from `path`; None if absent, corrupt or stale."""
    import lpcc

    try:
        model = lpcc.load(path)
    except (FileNotFoundError, NotADirectoryError):  # no entry (yet)
        return None
    except Exception as err:  # corrupt, unreadable, wrong version: recompile
        warnings.warn(
            f"lpcc.jit: cannot use the cached program {path} for {qualname} "
            f"({type(err).__name__}: {err}); compiling again and rewriting it",
            JitCacheWarning,
            stacklevel=5,
        )
        return None
    meta = model.program.meta.get("jit")
    outputs = meta.get("outputs") if isinstance(meta, dict) else None
    if not _valid_structure(outputs) or _count_leaves(outputs) != len(
        model.program.outputs
    ):
        warnings.warn(
            f"lpcc.jit: the cached program {path} for {qualname} has no valid "
            "jit metadata; compiling again and rewriting it",
            JitCacheWarning,
            stacklevel=5,
        )
        return None
    return model, outputs


def _store_entry(path: Path, model: Any) -> None:
    """Save atomically (lpcc.runtime.save: temp file + os.replace); warn once if not."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        model.save(path)
    except OSError as err:
        where = str(path.parent)
        if where not in _warned_dirs:
            _warned_dirs.add(where)
            warnings.warn(
                f"lpcc.jit: cannot write the disk cache at {where} ({err}); "
                "keeping compiled programs in memory only. Set LPCC_CACHE_DIR to "
                "a writable directory to keep them across runs.",
                JitCacheWarning,
                stacklevel=5,
            )


@functools.cache
def _lpcc_digest() -> str:
    """lpcc's version and the SHA-256 of its sources (once per process)."""
    from lpcc._version import __version__

    h = hashlib.sha256(f"lpcc {__version__} py{sys.version_info[:2]}".encode())
    for pkg in ("lpcc", "lpcc.runtime", "lpcc.frontends"):
        spec = importlib.util.find_spec(pkg)
        roots = list(spec.submodule_search_locations or []) if spec else []
        for root in roots:
            base = Path(root)
            files = sorted(
                p
                for p in base.rglob("*")
                if p.suffix in _SOURCE_SUFFIXES
                and "__pycache__" not in p.parts
                and p.is_file()
            )
            for p in files:
                h.update(f"{pkg}/{p.relative_to(base).as_posix()}\0".encode())
                h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def _target_features(target: str) -> str:
    if target != "cpu":
        return target
    from lpcc.codegen.llvm.isa import isa_features, selected_isa

    isa = selected_isa(to_run=True)
    return f"cpu:{isa}:{','.join(sorted(isa_features(isa)))}"


# -- fingerprints of user code and captured values -----------------------------------


def _is_library(module_name: str | None) -> bool:
    if not module_name:
        return False
    root = module_name.partition(".")[0]
    if root in _LIBRARY_ROOTS or root in sys.stdlib_module_names:
        return True
    file = getattr(sys.modules.get(root), "__file__", None) or ""
    return "site-packages" in file or "dist-packages" in file


def _code_names(code: types.CodeType) -> Iterator[str]:
    """Global names a code object (and the code nested in it) refers to."""
    yield from code.co_names
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            yield from _code_names(c)


class _Fingerprint:
    """SHA-256 over a function's source, its user callees and captured values."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self._seen: set[int] = set()
        self.unhashable: list[str] = []

    def hexdigest(self) -> str:
        return self._h.hexdigest()

    def _feed(self, *parts: Any) -> None:
        for p in parts:
            self._h.update(p if isinstance(p, bytes) else str(p).encode())
            self._h.update(b"\0")

    def function(self, fn: types.FunctionType) -> None:
        if id(fn) in self._seen:
            self._feed("seen", fn.__module__, fn.__qualname__)
            return
        self._seen.add(id(fn))
        self._feed("function", fn.__module__, fn.__qualname__)
        try:
            self._feed(inspect.getsource(fn))
        except (OSError, TypeError):  # defined in a REPL or exec: hash the bytecode
            self._feed(marshal.dumps(fn.__code__))
        self.value("defaults", fn.__defaults__)
        self.value("kwdefaults", fn.__kwdefaults__)
        code = fn.__code__
        names = dict.fromkeys(_code_names(code))  # ordered, unique
        for name in names:
            if name in fn.__globals__:
                self.value(name, fn.__globals__[name])
        for name, cell in zip(code.co_freevars, fn.__closure__ or (), strict=False):
            try:
                contents = cell.cell_contents
            except ValueError:  # an empty cell: a name bound later
                contents = None
            self.value(name, contents)

    def value(self, name: str, v: Any) -> None:
        self._feed("name", name)
        t = type(v)
        if t in _SCALARS or t in (complex, bytes):
            self._feed(t.__name__, repr(v))
        elif isinstance(v, JITFunction):
            self.function(v.fn)
        elif isinstance(v, types.FunctionType):
            if _is_library(v.__module__):
                self._feed("libfunction", v.__module__, v.__qualname__)
            else:
                self.function(v)
        elif isinstance(v, types.ModuleType):
            self._feed("module", v.__name__)
        elif isinstance(v, types.BuiltinFunctionType | types.MethodWrapperType):
            self._feed("builtin", getattr(v, "__module__", ""), v.__qualname__)
        elif isinstance(v, np.ndarray):
            self._feed("ndarray", v.dtype.str, v.shape)
            self._feed(np.ascontiguousarray(v).tobytes())
        elif isinstance(v, np.generic | np.dtype | enum.Enum):
            self._feed(t.__qualname__, repr(v))
        elif t.__module__.startswith("torch"):
            self._torch(name, v)
        elif isinstance(v, type):
            self._class(v)
        elif t in (tuple, list, set, frozenset, dict):
            if id(v) in self._seen:
                return
            self._seen.add(id(v))
            items = (
                sorted(v.items(), key=repr)
                if t is dict
                else sorted(v, key=repr)
                if t in (set, frozenset)
                else v
            )
            self._feed(t.__name__, len(v))
            for i, item in enumerate(items):
                if t is dict:
                    self.value(f"{name}[{item[0]!r}]", item[1])
                else:
                    self.value(f"{name}[{i}]", item)
        elif isinstance(v, functools.partial):
            self.value(f"{name}.func", v.func)
            self.value(f"{name}.args", v.args)
            self.value(f"{name}.keywords", v.keywords)
        elif dataclasses.is_dataclass(v):
            self._class(t)
            for f in dataclasses.fields(v):
                self.value(f"{name}.{f.name}", getattr(v, f.name))
        elif _is_torch_module(v):
            self._torch(name, v)
        else:
            self._feed("unhashable", t.__module__, t.__qualname__)
            self.unhashable.append(f"{name!r} (a {t.__qualname__})")

    def _class(self, cls: type) -> None:
        self._feed("class", cls.__module__, cls.__qualname__)
        if _is_library(cls.__module__) or id(cls) in self._seen:
            return
        self._seen.add(id(cls))
        try:
            self._feed(inspect.getsource(cls))
        except (OSError, TypeError):
            for attr, member in sorted(vars(cls).items()):
                if isinstance(member, types.FunctionType):
                    self._feed(attr, marshal.dumps(member.__code__))

    def _torch(self, name: str, v: Any) -> None:
        import torch

        if isinstance(v, torch.Tensor):
            t = v.detach().cpu().contiguous()
            self._feed("tensor", t.dtype, tuple(t.shape))
            self._feed(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(v, torch.nn.Module):
            if id(v) in self._seen:
                return
            self._seen.add(id(v))
            for sub in v.modules():
                self._class(type(sub))
                self._feed("training", sub.training)
            for key, t in v.state_dict(keep_vars=True).items():
                self.value(f"{name}.{key}", t)
        elif isinstance(v, torch.dtype | torch.Size | torch.device):
            self._feed(type(v).__name__, repr(v))
        elif callable(v):  # torch functions, ops and builtins: library code
            label = getattr(v, "__qualname__", None) or getattr(v, "__name__", None)
            self._feed("torch", getattr(v, "__module__", ""), label or type(v))
        else:
            self._feed("unhashable", type(v).__qualname__)
            self.unhashable.append(f"{name!r} (a {type(v).__qualname__})")


def _is_torch_module(v: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(v, torch.nn.Module)
