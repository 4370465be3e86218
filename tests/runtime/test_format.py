"""The program file: round trip, layout, versions, and corruption fuzzing.

Every corruption of a valid file (truncation, bit flips, garbage, appended
bytes) must raise FormatError: the header has its own checksum, sections
have SHA-256s, and padding must be zero. Headers that are re-signed after a
mutation (what a hostile or buggy writer could produce) must raise
FormatError or load a program that passes `Program.validate`, never any
other exception.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from lpcc.runtime import (
    VM,
    FormatError,
    Kernel,
    Program,
    dumps,
    load,
    loads,
    save,
)
from lpcc.runtime import format as fmt

import lpcc
from lpcc.codegen.program import build_program
from lpcc.ir.dialect import parse_module

W = np.arange(16).reshape(4, 4) % 16 - 8
TEXT = f"""
func.func @main(%x: tensor<?x4xf32> {{lp.dims = "s0,4"}}) -> tensor<?x4xf32> {{
  %w = lp.constant {{lp.name = "w"}} dense "0x{
    lpcc.dtype("int4").pack(lpcc.dtype("int4").encode(W)).tobytes().hex()
}" : tensor<4x4x!lp.int<4>>
  %wf = lp.cast %w : (tensor<4x4x!lp.int<4>>) -> tensor<4x4xf32>
  %b = lp.constant splat 0.5 : tensor<1x4xf32>
  %h = lp.matmul %x, %wf {{lp.dims = "s0,4"}}
    : (tensor<?x4xf32>, tensor<4x4xf32>) -> tensor<?x4xf32>
  %y = lp.add %h, %b {{lp.dims = "s0,4"}}
    : (tensor<?x4xf32>, tensor<1x4xf32>) -> tensor<?x4xf32>
  func.return %y : tensor<?x4xf32>
}}
"""


@pytest.fixture(scope="module")
def program() -> Program:
    p = build_program(parse_module(TEXT), dim_ranges={"s0": (1, None)})
    p.meta["note"] = {"list": [1, 2.5, None, True], "text": "héllo"}
    return p


@pytest.fixture(scope="module")
def blob(program: Program) -> bytes:
    return dumps(program)


def test_round_trip(program: Program, blob: bytes, tmp_path: Path) -> None:
    again = loads(blob)
    assert again == program
    assert dumps(again) == blob  # deterministic
    path = save(program, tmp_path / "m.lpcc")
    assert path.read_bytes() == blob
    assert load(path) == program
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    (want,) = VM(program).run([x])
    (got,) = VM(load(path)).run([x])
    assert np.array_equal(got, want)
    # Independent reference: the int4 codes decode to W, the splat is 0.5.
    ref = (x @ W.astype(np.float32)) + np.float32(0.5)
    assert np.allclose(got, ref, rtol=1e-6, atol=1e-6)


def test_binary_kernel_round_trips(program: Program) -> None:
    p = Program(
        inputs=program.inputs,
        outputs=program.outputs,
        buffers=program.buffers,
        constants=program.constants,
        kernels=[*program.kernels, Kernel("blob", "cpu", "elf", bytes(range(256)))],
        instructions=program.instructions,
        target=program.target,
    )
    again = loads(dumps(p))
    assert again.kernels[-1].source == bytes(range(256))
    assert again == p


def test_kernel_binaries_round_trip_as_sections_of_their_own(
    program: Program,
) -> None:
    k = program.kernels[0]
    fat = bytes(range(256)) * 5
    p = Program(
        inputs=program.inputs,
        outputs=program.outputs,
        buffers=program.buffers,
        constants=program.constants,
        kernels=[
            Kernel(k.name, k.target, k.kind, k.source, k.meta, {"fatbin": fat}),
            *program.kernels[1:],
        ],
        instructions=program.instructions,
        target=program.target,
    )
    blob = dumps(p)
    again = loads(blob)
    assert again.kernels[0].binaries == {"fatbin": fat}
    assert again == p
    header, data = split(blob)
    (sec,) = header["kernels"][0]["binaries"].values()
    entry = header["sections"][sec]
    assert entry["name"] == f"kernel/{k.name}/fatbin"
    assert data[entry["offset"] : entry["offset"] + entry["size"]] == fat


def test_format_1_0_files_without_binaries_load(program: Program, blob: bytes) -> None:
    header, data = split(blob)
    for k in header["kernels"]:
        del k["binaries"]
    old = loads(resign(header, data, version=(1, 0)))
    assert old == program
    assert all(k.binaries == {} for k in old.kernels)


def test_layout(program: Program, blob: bytes) -> None:
    magic, major, minor, hlen = struct.unpack_from("<8sHHQ", blob)
    assert magic == b"LPCCPRG\0" and (major, minor) == fmt.FORMAT_VERSION
    body = blob[52 : 52 + hlen]
    assert hashlib.sha256(blob[:20] + body).digest() == blob[20:52]
    header = json.loads(body)
    data_start = -(-(52 + hlen) // 64) * 64
    sections = header["sections"]
    assert len(sections) == len(program.constants) + len(program.kernels)
    for entry in header["constants"]:
        sec = sections[entry["section"]]
        const = next(c for c in program.constants if c.name == entry["name"])
        start = data_start + sec["offset"]
        assert sec["offset"] % 64 == 0
        assert blob[start : start + sec["size"]] == const.data  # raw packed bytes
        assert hashlib.sha256(const.data).hexdigest() == sec["sha256"]
    w = next(c for c in program.constants if c.name == "w")
    assert len(w.data) == 8  # 16 int4 codes
    last = sections[-1]
    assert len(blob) == data_start + last["offset"] + last["size"]
    assert header["instructions"][-1][0] == "ret"


def test_save_is_atomic(program: Program, tmp_path: Path) -> None:
    path = tmp_path / "m.lpcc"
    path.write_bytes(b"old")
    save(program, path)
    assert load(path) == program
    bad = Program(**{**program.__dict__, "meta": {"x": object()}})
    with pytest.raises(FormatError, match="not JSON data"):
        save(bad, path)
    assert load(path) == program  # the old file is intact
    assert sorted(os.listdir(tmp_path)) == ["m.lpcc"]  # no temp files left
    nan = Program(**{**program.__dict__, "meta": {"x": float("nan")}})
    with pytest.raises(FormatError, match="not JSON data"):
        dumps(nan)


def test_wrong_magic_and_versions(blob: bytes) -> None:
    with pytest.raises(FormatError, match="not an lpcc program file"):
        loads(b"PK\x03\x04" + blob[4:])
    with pytest.raises(FormatError, match="not an lpcc program file"):
        loads(b"\x89PNG")
    with pytest.raises(FormatError, match=r"written by program format 2\.0.*reads"):
        loads(blob[:8] + struct.pack("<HH", 2, 0) + blob[12:])
    with pytest.raises(FormatError, match=r"format 0\.7"):
        loads(blob[:8] + struct.pack("<HH", 0, 7) + blob[12:])


def split(blob: bytes) -> tuple[dict[str, Any], bytes]:
    """(header JSON, data area) of a file."""
    (hlen,) = struct.unpack_from("<Q", blob, 12)
    data_start = -(-(52 + hlen) // 64) * 64
    return json.loads(blob[52 : 52 + hlen]), blob[data_start:]


def resign(
    header: Any, data: bytes, version: tuple[int, int] = fmt.FORMAT_VERSION
) -> bytes:
    """A file whose header checksum is valid for `header` (a hostile writer)."""
    body = json.dumps(header).encode() if not isinstance(header, bytes) else header
    prefix = struct.pack("<8sHHQ", b"LPCCPRG\0", *version, len(body))
    head = prefix + hashlib.sha256(prefix + body).digest() + body
    return head + bytes(-len(head) % 64) + data


def test_resign_helper_is_faithful(program: Program, blob: bytes) -> None:
    header, data = split(blob)
    assert resign(json.dumps(header, separators=(",", ":")).encode(), data) == blob


def test_newer_minor_may_add_fields(program: Program, blob: bytes) -> None:
    header, data = split(blob)
    header["future"] = {"anything": 1}
    header["buffers"][0]["future"] = 2
    assert loads(resign(header, data, (1, 9))) == program
    with pytest.raises(FormatError, match="unknown field 'future'"):
        loads(resign(header, data, (1, 0)))


def _set(header: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    h = json.loads(json.dumps(header))
    node = h
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return h


TARGETED = [
    (("sections", 0, "size"), 1 << 61, "runs past the end"),
    (("sections", 0, "size"), -1, r"integer in \[0, 2\*\*62\]"),
    (("sections", 0, "offset"), 64, "expected 0"),
    (("sections", 0, "sha256"), "0" * 64, "SHA-256 mismatch"),
    (("sections", 0, "sha256"), "zz", "SHA-256 hex"),
    (("constants", 1, "section"), 0, "used twice"),
    (("constants", 0, "section"), 99, "does not exist"),
    (("constants", 0, "shape"), [4, 5], "packed is"),
    (("constants", 0, "shape"), [1 << 62, 1 << 62], "too large"),
    (("constants", 0, "dtype"), "int99", "integer width"),
    (("constants", 0, "dtype"), "float32", "not a canonical"),
    (("constants", 0, "splat"), 1, "true or false"),
    (("instructions", 0), ["jump", 3], "unknown opcode 'jump'"),
    (("instructions", 0), ["alloc", 0], "alloc takes 2 operands"),
    (("instructions", 0), [], "opcode, operands"),
    (("instructions", 1, 2), [999], "out of range"),
    (("instructions", -1, 1), [3], "differs from output"),
    (("buffers", 0, "shape"), ["s0**"], "does not parse"),
    (("buffers", 0, "shape"), ["__import__('os')"], "only integers"),
    (("buffers", 0, "shape"), ["s" * 5000], "5000 characters"),
    (("buffers", 0, "input"), 7, "out of range"),
    (("buffers", 0, "storage"), True, "expected an integer"),
    (("inputs",), {}, "expected a list"),
    (("kernels", 0, "encoding"), "rot13", "expected 'utf-8' or 'binary'"),
    (("kernels", 0, "name"), "", "non-empty name"),
    (("meta",), [], "expected an object"),
    (("dim_ranges", "s0"), [5, 2], "bad range"),
    (("dim_ranges", "s0"), [1], r"expected \[lo, hi\]"),
]


@pytest.mark.parametrize(("path", "value", "message"), TARGETED)
def test_targeted_header_corruption(
    blob: bytes, path: tuple[Any, ...], value: Any, message: str
) -> None:
    header, data = split(blob)
    with pytest.raises(FormatError, match=message) as err:
        loads(resign(_set(header, path, value), data))
    assert "corrupt or truncated; re-save it" in str(err.value)


def test_hostile_json(blob: bytes) -> None:
    header, data = split(blob)
    text = json.dumps(header)
    cases = {
        b"[" * 100_000 + b"]" * 100_000: "not valid JSON",
        b'{"a": NaN}': "not valid JSON",
        b"\xff\xfe": "not valid JSON",
        text.replace('"target"', '"target": "x", "target"', 1).encode(): "duplicate",
        b"12": "expected an object",
    }
    for body, message in cases.items():
        with pytest.raises(FormatError, match=message):
            loads(resign(body, data))
    deep = json.loads(text)
    deep["meta"] = {"x": json.loads("[" * 50 + "]" * 50)}
    assert loads(resign(deep, data)).meta == deep["meta"]  # nested data is fine
    # A section nobody uses, and junk after the last section.
    with pytest.raises(FormatError, match="not used by any constant"):
        extra = json.loads(text)
        end = len(data)
        extra["sections"].append(
            {
                "name": "x",
                "offset": -(-end // 64) * 64,
                "size": 0,
                "sha256": hashlib.sha256(b"").hexdigest(),
            }
        )
        loads(resign(extra, data + bytes(-end % 64)))


def test_every_truncation_and_extension_fails(blob: bytes) -> None:
    for n in range(len(blob)):
        with pytest.raises(FormatError):
            loads(blob[:n])
    for tail in (b"\0", b"\0" * 64, b"x"):
        with pytest.raises(FormatError, match="after the last section"):
            loads(blob + tail)


def test_random_corruption_is_always_detected(blob: bytes, tmp_path: Path) -> None:
    rng = np.random.default_rng(1234)
    n = len(blob)
    for trial in range(3000):
        data = bytearray(blob)
        kind = trial % 4
        if kind == 0:  # one bit
            pos = int(rng.integers(0, n))
            data[pos] ^= 1 << int(rng.integers(0, 8))
        elif kind == 1:  # a few bits in the first 20 bytes + header
            for _ in range(int(rng.integers(1, 4))):
                pos = int(rng.integers(0, min(n, 600)))
                data[pos] ^= 1 << int(rng.integers(0, 8))
        elif kind == 2:  # a run of garbage
            pos = int(rng.integers(0, n))
            k = int(rng.integers(1, 16))
            data[pos : pos + k] = rng.integers(0, 256, k, dtype=np.uint8).tobytes()
            if bytes(data) == blob:
                continue
        else:  # a wrong declared header length
            lengths = [0, 1, n, 1 << 40, (1 << 64) - 1, int(rng.integers(0, n))]
            hlen = lengths[int(rng.integers(0, len(lengths)))]
            data[12:20] = struct.pack("<Q", hlen)
            if bytes(data) == blob:
                continue
        with pytest.raises(FormatError):
            loads(bytes(data))
    path = tmp_path / "bad.lpcc"
    path.write_bytes(blob[:-1])
    with pytest.raises(FormatError, match="truncated"):
        load(path)


def _leaves(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(node, dict):
        out = [(*path, k) for k in node]
        for k, v in node.items():
            out += _leaves(v, (*path, k))
        return out
    if isinstance(node, list):
        out = [(*path, i) for i in range(len(node))]
        for i, v in enumerate(node):
            out += _leaves(v, (*path, i))
        return out
    return []


WEIRD: list[Any] = [
    None,
    True,
    -1,
    0,
    1,
    2,
    3,
    7,
    1 << 70,
    1.5,
    "",
    "x",
    "s0",
    "f32",
    "int4",
    "s0*s0",
    [],
    [0],
    [-1],
    ["alloc", 0, 4],
    {},
    {"a": 1},
]


def test_resigned_header_mutations_never_crash(program: Program, blob: bytes) -> None:
    header, data = split(blob)
    leaves = _leaves(header)
    rng = np.random.default_rng(99)
    outcomes = {"error": 0, "ok": 0}
    for _ in range(1500):
        path = leaves[int(rng.integers(0, len(leaves)))]
        value = WEIRD[int(rng.integers(0, len(WEIRD)))]
        mutated = _set(header, path, value)
        try:
            p = loads(resign(mutated, data))
        except FormatError:
            outcomes["error"] += 1
            continue
        p.validate()  # whatever loads is a consistent program
        outcomes["ok"] += 1
    assert outcomes["error"] > 1000


def test_saved_file_is_readable_like_any_other(
    program: Program, tmp_path: Path
) -> None:
    path = tmp_path / "p.lpcc"
    save(program, path)
    assert path.stat().st_mode & 0o777 == 0o644
