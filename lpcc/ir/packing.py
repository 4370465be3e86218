"""Dense bit packing: the one storage format of every b-bit tensor.

Element i of a b-bit tensor occupies bits [i*b, (i+1)*b) of a little-endian
bit stream, least significant bit first, with no padding between elements; the
stream is ceil(n*b/8) bytes and the unused high bits of the last byte are 0.
3-, 5-, 6- and 7-bit values therefore straddle bytes. Every other arrangement
(SIMD interleaving, bit planes, GPU tiles) is a *layout* over the logical
tensor, never a second storage format.

The codecs work on whole groups of g = 8 / gcd(b, 8) elements, which fill
exactly g*b/8 bytes: each group is assembled in ceil(g*b/64) uint64 words with
one vectorized shift-or per element of the group (g <= 8), so the cost is a
handful of NumPy passes whatever b is, and no Python loop runs per element.
"""

from __future__ import annotations

import math

import numpy as np

from lpcc.errors import CodecError

MAX_BITS = 64


def code_dtype(bits: int) -> np.dtype:
    """The smallest unsigned NumPy integer type that holds a `bits`-bit code."""
    if not 1 <= bits <= MAX_BITS:
        raise CodecError(f"bit width must be in 1..{MAX_BITS}, got {bits}")
    for candidate in (np.uint8, np.uint16, np.uint32, np.uint64):
        if bits <= np.dtype(candidate).itemsize * 8:
            return np.dtype(candidate)
    raise AssertionError("unreachable")


def packed_nbytes(count: int, bits: int) -> int:
    """Bytes that `count` packed `bits`-bit elements occupy."""
    return (count * bits + 7) // 8


def _group(bits: int) -> tuple[int, int, type[np.unsignedinteger], int, int]:
    """(elements, bytes, word type, word bits, words) of one byte-aligned group.

    A group is g = 8 / gcd(b, 8) elements, exactly g*b/8 bytes. It is built in
    one uint32 when it fits (half the memory traffic of uint64), else in
    uint64 words.
    """
    g = 8 // math.gcd(bits, 8)
    nbytes = g * bits // 8
    word, wbits = (np.uint32, 32) if nbytes <= 4 else (np.uint64, 64)
    return g, nbytes, word, wbits, -(-nbytes * 8 // wbits)


def _whole_bytes(bits: int) -> bool:
    return bits in (8, 16, 32, 64)


def check_codes(codes: np.ndarray, bits: int, what: str) -> np.ndarray:
    """Return `codes` flattened (C order) after checking they fit in `bits`.

    Raises `CodecError` naming the first offending element, because a code
    that does not fit would silently corrupt its neighbours once packed.
    """
    arr = np.asarray(codes)
    if arr.dtype.kind not in "iub":
        raise CodecError(
            f"{what}: codes must be an integer array, got dtype {arr.dtype}; "
            "turn values into codes with the element type's encode()"
        )
    flat = arr.reshape(-1)
    if flat.size:
        limit = (1 << bits) - 1
        bad = None
        if arr.dtype.kind == "i" and flat.min() < 0:
            bad = int(np.argmax(flat < 0))
        elif int(flat.max()) > limit:
            bad = int(np.argmax(flat > limit))
        if bad is not None:
            raise CodecError(
                f"{what}: code {int(flat[bad])} at flat index {bad} does not "
                f"fit in {bits} bits (valid codes are 0..{limit}); turn values "
                "into codes with the element type's encode()"
            )
    return flat


def pack_bits(codes: np.ndarray, bits: int, what: str = "pack") -> np.ndarray:
    """Pack `bits`-bit codes (any shape, C order) into a dense uint8 stream."""
    flat = check_codes(codes, bits, what)
    n = flat.size
    nbytes = packed_nbytes(n, bits)
    if _whole_bytes(bits):
        # Whole bytes: the stream is the little-endian image of the codes.
        return flat.astype(f"<u{bits // 8}").view(np.uint8).reshape(-1)
    g, gbytes, word, wbits, words = _group(bits)
    ngroups = -(-n // g)
    if ngroups * g != n:
        flat = np.concatenate([flat, np.zeros(ngroups * g - n, flat.dtype)])
    cols = flat.reshape(ngroups, g)
    acc = np.zeros((ngroups, words), word)
    for j in range(g):
        w, s = divmod(j * bits, wbits)
        col = cols[:, j].astype(word)
        acc[:, w] |= col << word(s)
        if s + bits > wbits:  # the element straddles two words
            acc[:, w + 1] |= col >> word(wbits - s)
    stream = acc.view(np.uint8).reshape(ngroups, words * wbits // 8)
    if stream.shape[1] != gbytes:
        stream = np.ascontiguousarray(stream[:, :gbytes])
    return stream.reshape(-1)[:nbytes]


def unpack_bits(
    buf: np.ndarray | bytes | bytearray | memoryview,
    bits: int,
    count: int,
    what: str = "unpack",
) -> np.ndarray:
    """Read `count` codes of `bits` bits from the start of a packed stream.

    Returns a 1-D array of the smallest unsigned type that holds `bits`. Bytes
    past the first ceil(count*bits/8) are ignored; fewer bytes are an error.
    """
    if isinstance(buf, bytes | bytearray | memoryview):
        data = np.frombuffer(buf, np.uint8)
    else:
        data = np.asarray(buf)
        if data.dtype != np.uint8:
            raise CodecError(
                f"{what}: the packed buffer must be uint8 bytes, got dtype {data.dtype}"
            )
        data = data.reshape(-1)
    if count < 0:
        raise CodecError(f"{what}: count must be >= 0, got {count}")
    need = packed_nbytes(count, bits)
    if data.size < need:
        raise CodecError(
            f"{what}: {count} elements of {bits} bits need {need} bytes, but the "
            f"buffer holds {data.size}"
        )
    out_dtype = code_dtype(bits)
    if _whole_bytes(bits):
        return data[:need].view(f"<u{bits // 8}").astype(out_dtype)
    g, gbytes, word, wbits, words = _group(bits)
    ngroups = -(-count // g)
    wbytes = words * wbits // 8
    padded = np.zeros((ngroups, wbytes), np.uint8)
    full = need // gbytes  # groups wholly inside the buffer
    padded[:full, :gbytes] = data[: full * gbytes].reshape(full, gbytes)
    if full < ngroups:
        tail = data[full * gbytes : need]
        padded[full, : tail.size] = tail
    acc = padded.view(word)  # (ngroups, words)
    mask = word((1 << bits) - 1)
    out = np.empty((ngroups, g), out_dtype)
    for j in range(g):
        w, s = divmod(j * bits, wbits)
        val = acc[:, w] >> word(s)
        if s + bits > wbits:
            val |= acc[:, w + 1] << word(wbits - s)
        out[:, j] = val & mask
    return out.reshape(-1)[:count]
