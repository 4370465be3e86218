"""The saved-program file: one file, JSON metadata plus raw sections; never pickle.

Layout (all integers little-endian):

    offset  size  field
    0       8     magic b"LPCCPRG\\0"
    8       2     format major version (u16)
    10      2     format minor version (u16)
    12      8     header length H (u64)
    20      32    SHA-256 of bytes [0, 20) + the header
    52      H     header: UTF-8 JSON (specs, buffers, instructions, kernels,
                  constant table, section table)
    ...           zero padding to a multiple of 64: the data area starts here
    data    ...   sections, each at a 64-byte aligned offset from the data
                  area, in table order, zero padding between; the file ends
                  at the end of the last section

The section table lists (name, offset, size, sha256) for every section: one
per constant (its packed code bytes, as `DType.pack` writes them), one per
kernel (its source text or binary) and one per compiled form a kernel
carries (`Kernel.binaries`, e.g. a CUDA kernel's "fatbin", named
`kernel/<name>/<key>`; format 1.1, absent from 1.0 files). The layout is
canonical, so `load` can demand it exactly: every byte of the file is
covered by the header checksum, a section checksum, or a must-be-zero
padding rule, and any corruption is detected.

Versions follow semver: a reader loads files of its own major version
(ignoring header keys a newer minor version added) and refuses the others.
`load` validates everything before trusting it (magic, version, lengths,
checksums, the JSON schema, every index, the constant sizes, then the whole
program with `Program.validate`) and reports any problem as `FormatError`;
it never evaluates anything from the file. Writes are atomic: a temporary
file in the same directory, then `os.replace`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from lpcc.errors import LpccError
from lpcc.ir.dtypes import dtype
from lpcc.ir.symbolic import ShapeError, symbols

from .program import (
    OPCODES,
    Alloc,
    BufferInfo,
    Call,
    Constant,
    Copy,
    Free,
    Instruction,
    Kernel,
    Program,
    ProgramError,
    Return,
    TensorSpec,
    View,
)

MAGIC = b"LPCCPRG\0"
FORMAT_VERSION = (1, 1)  # 1.1: kernels may carry binaries
ALIGN = 64
_PREFIX = struct.Struct("<8sHHQ")
_DIGEST = 32
_HEAD = _PREFIX.size + _DIGEST  # 52: where the JSON header starts
_MAX_INT = 1 << 62
_MAX_EXPR = 1000  # characters in one size expression
_TEXT, _BINARY = "utf-8", "binary"


class FormatError(LpccError, ValueError):
    """A program file that is not one, is corrupt, or is of another version."""


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- writing ---------------------------------------------------------------------


def _header(program: Program) -> tuple[dict[str, Any], list[bytes]]:
    """The JSON-ready header (without the section table) and the payloads."""
    payloads: list[bytes] = []
    sections: list[str] = []

    def section(name: str, data: bytes) -> int:
        sections.append(name)
        payloads.append(bytes(data))
        return len(payloads) - 1

    def spec(s: TensorSpec) -> dict[str, Any]:
        return {"name": s.name, "shape": list(s.shape), "dtype": s.dtype}

    constants = [
        {
            "name": c.name,
            "dtype": c.dtype,
            "shape": list(c.shape),
            "splat": c.splat,
            "section": section(f"constant/{j}", c.data),
        }
        for j, c in enumerate(program.constants)
    ]
    kernels = []
    for k in program.kernels:
        text = isinstance(k.source, str)
        data = k.source.encode("utf-8") if isinstance(k.source, str) else k.source
        kernels.append(
            {
                "name": k.name,
                "target": k.target,
                "kind": k.kind,
                "meta": k.meta,
                "encoding": _TEXT if text else _BINARY,
                "section": section(f"kernel/{k.name}", data),
                "binaries": {
                    key: section(f"kernel/{k.name}/{key}", blob)
                    for key, blob in sorted(k.binaries.items())
                },
            }
        )
    header = {
        "lpcc_version": _lpcc_version(),
        "target": program.target,
        "meta": program.meta,
        "dim_ranges": {k: [lo, hi] for k, (lo, hi) in program.dim_ranges.items()},
        "inputs": [spec(s) for s in program.inputs],
        "outputs": [spec(s) for s in program.outputs],
        "buffers": [
            {
                "shape": list(b.shape),
                "dtype": b.dtype,
                "storage": b.storage,
                "input": b.input,
                "constant": b.constant,
            }
            for b in program.buffers
        ],
        "constants": constants,
        "kernels": kernels,
        "instructions": [_encode_instruction(i) for i in program.instructions],
        "sections": [{"name": n} for n in sections],
    }
    return header, payloads


def _encode_instruction(ins: Instruction) -> list[Any]:
    op = OPCODES[type(ins)]
    if isinstance(ins, Alloc):
        return [op, ins.storage, ins.nbytes]
    if isinstance(ins, Call):
        return [op, ins.kernel, list(ins.inputs), list(ins.outputs)]
    if isinstance(ins, View):
        return [op, ins.dst, ins.src, list(ins.shape)]
    if isinstance(ins, Copy):
        return [op, ins.dst, ins.src]
    if isinstance(ins, Free):
        return [op, ins.storage]
    assert isinstance(ins, Return)
    return [op, list(ins.buffers)]


def _lpcc_version() -> str:
    from lpcc._version import __version__

    return __version__


def frame(
    header: dict[str, Any],
    payloads: list[bytes],
    version: tuple[int, int] = FORMAT_VERSION,
) -> bytes:
    """The file bytes for `header` and section `payloads` (fills the table)."""
    offset = 0
    table = header["sections"]
    for entry, data in zip(table, payloads, strict=True):
        entry.update(offset=offset, size=len(data), sha256=_hex(data))
        offset = _align(offset + len(data))
    try:
        text = json.dumps(header, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as err:
        raise FormatError(
            f"cannot save the program: its metadata is not JSON data ({err}); keep "
            "Program.meta and Kernel.meta to dicts, lists, str, int, finite float, "
            "bool and None"
        ) from None
    body = text.encode("utf-8")
    prefix = _PREFIX.pack(MAGIC, version[0], version[1], len(body))
    head = prefix + hashlib.sha256(prefix + body).digest() + body
    out = bytearray(head)
    out += bytes(_align(len(out)) - len(out))
    data_start = len(out)
    for entry, data in zip(table, payloads, strict=True):
        out += bytes(data_start + entry["offset"] - len(out))
        out += data
    return bytes(out)


def dumps(program: Program) -> bytes:
    """The program as the bytes of a program file."""
    try:
        program.validate()
    except ProgramError as err:
        raise FormatError(f"cannot save the program: {err}") from None
    header, payloads = _header(program)
    return frame(header, payloads)


def save(program: Program, path: str | os.PathLike[str]) -> Path:
    """Write `program` to `path` atomically (temp file + os.replace)."""
    data = dumps(program)
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a saved program is a normal file
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


# -- reading ---------------------------------------------------------------------


class _Bad(Exception):
    """Internal: a schema violation at a JSON path."""


def _fail(where: str, why: str) -> NoReturn:
    raise _Bad(f"{where}: {why}")


def _obj(
    v: Any,
    where: str,
    keys: dict[str, Callable[[Any, str], Any]],
    lax: bool,
    optional: dict[str, Any] | None = None,
):
    """`v` checked against `keys`; `optional` fields (newer minor versions)
    take their default when absent."""
    if not isinstance(v, dict):
        _fail(where, f"expected an object, got {type(v).__name__}")
    optional = optional or {}
    missing = [k for k in keys if k not in v and k not in optional]
    if missing:
        _fail(where, f"missing field {missing[0]!r}")
    extra = [k for k in v if k not in keys]
    if extra and not lax:
        _fail(where, f"unknown field {extra[0]!r}")
    return {
        k: check(v[k], f"{where}.{k}") if k in v else optional[k]
        for k, check in keys.items()
    }


def _list(item: Callable[[Any, str], Any]) -> Callable[[Any, str], list[Any]]:
    def check(v: Any, where: str) -> list[Any]:
        if not isinstance(v, list):
            _fail(where, f"expected a list, got {type(v).__name__}")
        return [item(x, f"{where}[{i}]") for i, x in enumerate(v)]

    return check


def _int(v: Any, where: str) -> int:
    if type(v) is not int or not 0 <= v <= _MAX_INT:
        _fail(where, f"expected an integer in [0, 2**62], got {v!r:.40}")
    return v


def _opt_int(v: Any, where: str) -> int | None:
    return None if v is None else _int(v, where)


def _str(v: Any, where: str) -> str:
    if not isinstance(v, str):
        _fail(where, f"expected a string, got {type(v).__name__}")
    return v


def _name(v: Any, where: str) -> str:
    if not isinstance(v, str) or not v or len(v) > 1000:
        _fail(where, f"expected a non-empty name, got {v!r:.40}")
    return v


def _bool(v: Any, where: str) -> bool:
    if not isinstance(v, bool):
        _fail(where, f"expected true or false, got {v!r:.40}")
    return v


def _dict(v: Any, where: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        _fail(where, f"expected an object, got {type(v).__name__}")
    return v


def _dim(v: Any, where: str) -> int | str:
    if isinstance(v, str):
        if len(v) > _MAX_EXPR:
            _fail(where, f"size expression of {len(v)} characters")
        try:
            symbols(v)
        except (ShapeError, RecursionError, MemoryError, ValueError) as err:
            _fail(where, str(err))
        return v
    return _int(v, where)


def _shape(v: Any, where: str) -> tuple[int | str, ...]:
    return tuple(_list(_dim)(v, where))


def _dtype(v: Any, where: str) -> str:
    if not isinstance(v, str) or len(v) > 100:
        _fail(where, f"expected an element type name, got {v!r:.40}")
    try:
        if dtype(v).name != v:
            _fail(where, f"{v!r} is not a canonical element type name")
    except LpccError as err:
        _fail(where, str(err))
    return v


def _sha(v: Any, where: str) -> str:
    if (
        not isinstance(v, str)
        or len(v) != 64
        or any(c not in "0123456789abcdef" for c in v)
    ):
        _fail(where, "expected a SHA-256 hex digest")
    return v


def _range(v: Any, where: str) -> tuple[int, int | None]:
    if not isinstance(v, list) or len(v) != 2:
        _fail(where, "expected [lo, hi]")
    return _int(v[0], f"{where}[0]"), _opt_int(v[1], f"{where}[1]")


def _instruction(v: Any, where: str) -> Instruction:
    if not isinstance(v, list) or not v or not isinstance(v[0], str):
        _fail(where, "expected [opcode, operands...]")
    op, args = v[0], v[1:]
    ints = _list(_int)
    arity = {"alloc": 2, "call": 3, "view": 3, "copy": 2, "free": 1, "ret": 1}
    if op not in arity:
        _fail(where, f"unknown opcode {op!r:.40} (known: {', '.join(arity)})")
    if len(args) != arity[op]:
        _fail(where, f"{op} takes {arity[op]} operands, got {len(args)}")
    if op == "alloc":
        return Alloc(_int(args[0], where), _dim(args[1], where))
    if op == "call":
        return Call(
            _name(args[0], where),
            tuple(ints(args[1], where)),
            tuple(ints(args[2], where)),
        )
    if op == "view":
        return View(_int(args[0], where), _int(args[1], where), _shape(args[2], where))
    if op == "copy":
        return Copy(_int(args[0], where), _int(args[1], where))
    if op == "free":
        return Free(_int(args[0], where))
    return Return(tuple(ints(args[0], where)))


def _json(body: bytes) -> Any:
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in items:
            if k in out:
                raise ValueError(f"duplicate key {k!r}")
            out[k] = v
        return out

    def constant(name: str) -> NoReturn:
        raise ValueError(f"{name} is not JSON")

    return json.loads(
        body.decode("utf-8"), object_pairs_hook=pairs, parse_constant=constant
    )


class _Reader:
    """Random access to the bytes of a file or of an in-memory copy."""

    def __init__(self, data: bytes | None = None, file: Any = None) -> None:
        self.data, self.file = data, file
        self.size = len(data) if data is not None else os.fstat(file.fileno()).st_size

    def read(self, offset: int, n: int) -> bytes:
        if self.data is not None:
            return self.data[offset : offset + n]
        self.file.seek(offset)
        return self.file.read(n)  # type: ignore[no-any-return]


def _parse(reader: _Reader, name: str) -> Program:
    def corrupt(why: str) -> FormatError:
        return FormatError(
            f"{name}: {why}; the file is corrupt or truncated; re-save it"
        )

    size = reader.size
    if size < _HEAD:
        if reader.read(0, len(MAGIC)) != MAGIC[: min(size, len(MAGIC))]:
            raise FormatError(f"{name}: not an lpcc program file (bad magic bytes)")
        raise corrupt(f"only {size} bytes, shorter than the {_HEAD}-byte preamble")
    prefix = reader.read(0, _PREFIX.size)
    magic, major, minor, hlen = _PREFIX.unpack(prefix)
    if magic != MAGIC:
        raise FormatError(
            f"{name}: not an lpcc program file (magic bytes {magic!r}, expected "
            f"{MAGIC!r})"
        )
    if major != FORMAT_VERSION[0]:
        raise FormatError(
            f"{name}: written by program format {major}.{minor}, this lpcc "
            f"({_lpcc_version()}) reads format {FORMAT_VERSION[0]}.x; load it with "
            "the lpcc that wrote it, or recompile the model"
        )
    if hlen > size - _HEAD:
        raise corrupt(f"header length {hlen} runs past the end ({size} bytes)")
    digest = reader.read(_PREFIX.size, _DIGEST)
    body = reader.read(_HEAD, hlen)
    if hashlib.sha256(prefix + body).digest() != digest:
        raise corrupt("the header checksum does not match")
    try:
        raw = _json(body)
    except (ValueError, RecursionError, MemoryError) as err:
        raise corrupt(f"the header is not valid JSON ({err})") from None
    lax = minor > FORMAT_VERSION[1]
    try:
        header = _schema(raw, lax)
    except _Bad as err:
        raise corrupt(f"bad header field {err}") from None

    # Sections: canonical layout, bounds, zero padding, checksums.
    data_start = _align(_HEAD + hlen)
    pos = _HEAD + hlen
    payloads: list[bytes] = []
    offset = 0
    for i, sec in enumerate(header["sections"]):
        label = f"section #{i} {sec['name']!r}"
        if sec["offset"] != offset:
            raise corrupt(f"{label} is at offset {sec['offset']}, expected {offset}")
        start = data_start + offset
        if start + sec["size"] > size:
            raise corrupt(
                f"{label} ({sec['size']} bytes at {start}) runs past the end of "
                f"the file ({size} bytes)"
            )
        if any(reader.read(pos, start - pos)):
            raise corrupt(f"nonzero padding before {label}")
        data = reader.read(start, sec["size"])
        if len(data) != sec["size"]:
            raise corrupt(f"{label} is truncated")
        if _hex(data) != sec["sha256"]:
            raise corrupt(f"{label}: SHA-256 mismatch")
        payloads.append(data)
        pos = start + sec["size"]
        offset = _align(offset + sec["size"])
    end = max(pos, data_start)
    if any(reader.read(pos, end - pos)):
        raise corrupt("nonzero padding after the header")
    if size != end:
        raise corrupt(f"the file has {size - end} bytes after the last section")
    try:
        program = _build(header, payloads)
        program.validate()
    except _Bad as err:
        raise corrupt(f"bad header field {err}") from None
    except ProgramError as err:
        raise corrupt(str(err)) from None
    return program


def _schema(raw: Any, lax: bool) -> dict[str, Any]:
    """Type-check every field of the header; returns it with typed values."""
    spec = _list(
        lambda v, w: _obj(v, w, {"name": _name, "shape": _shape, "dtype": _dtype}, lax)
    )
    buffer = _list(
        lambda v, w: _obj(
            v,
            w,
            {
                "shape": _shape,
                "dtype": _dtype,
                "storage": _opt_int,
                "input": _opt_int,
                "constant": _opt_int,
            },
            lax,
        )
    )
    constant = _list(
        lambda v, w: _obj(
            v,
            w,
            {
                "name": _name,
                "dtype": _dtype,
                "shape": _list(_int),
                "splat": _bool,
                "section": _int,
            },
            lax,
        )
    )

    def encoding(v: Any, where: str) -> str:
        if v not in (_TEXT, _BINARY):
            _fail(where, f"expected {_TEXT!r} or {_BINARY!r}")
        return v  # type: ignore[no-any-return]

    def binaries(v: Any, where: str) -> dict[str, int]:
        d = _dict(v, where)
        return {_name(k, f"{where} key"): _int(x, f"{where}.{k}") for k, x in d.items()}

    kernel = _list(
        lambda v, w: _obj(
            v,
            w,
            {
                "name": _name,
                "target": _name,
                "kind": _name,
                "meta": _dict,
                "encoding": encoding,
                "section": _int,
                "binaries": binaries,
            },
            lax,
            {"binaries": {}},
        )
    )
    section = _list(
        lambda v, w: _obj(
            v,
            w,
            {"name": _name, "offset": _int, "size": _int, "sha256": _sha},
            lax,
        )
    )

    def ranges(v: Any, where: str) -> dict[str, tuple[int, int | None]]:
        d = _dict(v, where)
        return {k: _range(x, f"{where}.{k}") for k, x in d.items()}

    return _obj(
        raw,
        "header",
        {
            "lpcc_version": _str,
            "target": _name,
            "meta": _dict,
            "dim_ranges": ranges,
            "inputs": spec,
            "outputs": spec,
            "buffers": buffer,
            "constants": constant,
            "kernels": kernel,
            "instructions": _list(_instruction),
            "sections": section,
        },
        lax,
    )


def _build(h: dict[str, Any], payloads: list[bytes]) -> Program:
    """The Program of a schema-checked header; each section used exactly once."""
    used: set[int] = set()

    def take(i: int, where: str) -> bytes:
        if i >= len(payloads):
            _fail(where, f"section {i} does not exist ({len(payloads)} sections)")
        if i in used:
            _fail(where, f"section {i} is used twice")
        used.add(i)
        return payloads[i]

    constants = []
    for j, c in enumerate(h["constants"]):
        where = f"header.constants[{j}]"
        data = take(c["section"], where)
        const = Constant(c["name"], c["dtype"], tuple(c["shape"]), data, c["splat"])
        if any(d > _MAX_INT for d in const.shape) or const.numel > _MAX_INT:
            _fail(where, "shape too large")
        if len(data) != const.expected_nbytes():
            _fail(
                where,
                f"{len(data)} bytes; {const.shape} x {const.dtype} packed is "
                f"{const.expected_nbytes()} bytes",
            )
        constants.append(const)
    kernels = []
    for j, k in enumerate(h["kernels"]):
        where = f"header.kernels[{j}]"
        data = take(k["section"], where)
        source: str | bytes = data
        if k["encoding"] == _TEXT:
            try:
                source = data.decode("utf-8")
            except UnicodeDecodeError as err:
                _fail(where, f"source is not UTF-8 ({err})")
        bins = {
            key: take(i, f"{where}.binaries.{key}") for key, i in k["binaries"].items()
        }
        kernels.append(
            Kernel(k["name"], k["target"], k["kind"], source, k["meta"], bins)
        )
    if len(used) != len(payloads):
        _fail("header.sections", "a section is not used by any constant or kernel")
    return Program(
        inputs=[TensorSpec(s["name"], s["shape"], s["dtype"]) for s in h["inputs"]],
        outputs=[TensorSpec(s["name"], s["shape"], s["dtype"]) for s in h["outputs"]],
        buffers=[
            BufferInfo(b["shape"], b["dtype"], b["storage"], b["input"], b["constant"])
            for b in h["buffers"]
        ],
        constants=constants,
        kernels=kernels,
        instructions=h["instructions"],
        target=h["target"],
        meta=h["meta"],
        dim_ranges=h["dim_ranges"],
    )


def loads(data: bytes, name: str = "<bytes>") -> Program:
    """The program held in `data` (the bytes of a program file)."""
    return _parse(_Reader(data=bytes(data)), name)


def load(path: str | os.PathLike[str]) -> Program:
    """Read and fully validate the program file at `path`."""
    with open(path, "rb") as f:
        return _parse(_Reader(file=f), str(path))
