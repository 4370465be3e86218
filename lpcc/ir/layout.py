"""Layouts: the Tilus algebra of how workers hold the elements of a tile.

A layout maps (worker, local index) to a logical index of a tile. On the CPU
workers are SIMD lanes and threads; on the GPU, threads of a block. The
canonical form (Tilus, arXiv 2504.12984, and docs/layouts.md):

* `shape`: the tile, e.g. (4, 8);
* `mode_shape`: every dimension factored into modes, most significant first,
  dimensions in order, e.g. (2, 2 | 2, 4) flattened to (2, 2, 2, 4);
* `spatial_modes`: the modes that make up the worker index, most significant
  first; an entry -r is a replication mode of r workers that hold the same
  elements;
* `local_modes`: the modes that make up the local (register) index.

Worker digits and local digits scatter to the modes; each dimension's index
is its modes read as a mixed-radix number. With spatial (1, 3) and local
(0, 2) above, element (r, c) sits at worker (r % 2) * 4 + c % 4 and local
(r // 2) * 2 + c // 4.

Algebra, with T_B, L_B the worker count and local size of B:

* product: (A * B)(t, i) = A(t // T_B, i // L_B) * shape_B + B(t % T_B, i % L_B)
  (B's tile repeated in the pattern of A); associative, not commutative.
* divide: A / B = C with C * B == A, or an error (`divide` returns None).
* canonical form: size-1 modes dropped, modes adjacent both in their
  dimension and in their list merged, adjacent replications merged. Two
  layouts are equal iff their canonical forms are, and the constructor always
  canonicalizes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lpcc.errors import LayoutError

# -- a mutable mode graph, used to build and transform layouts ----------------


class _Mode:
    """One factor of one dimension; compared by identity while transforming."""

    __slots__ = ("dim", "size")

    def __init__(self, dim: int, size: int) -> None:
        self.dim = dim
        self.size = size


class _Rep:
    """A replication entry of the worker index: `size` workers, same elements."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size


@dataclass
class _Graph:
    shape: list[int]
    per_dim: list[list[_Mode]]
    spatial: list[_Mode | _Rep]
    local: list[_Mode]

    @classmethod
    def of(cls, layout: Layout) -> _Graph:
        modes: list[_Mode] = []
        per_dim: list[list[_Mode]] = []
        for d, count in enumerate(layout.modes_per_dim):
            start = len(modes)
            per_dim.append([])
            for size in layout.mode_shape[start : start + count]:
                mode = _Mode(d, size)
                modes.append(mode)
                per_dim[-1].append(mode)
        spatial: list[_Mode | _Rep] = [
            _Rep(-k) if k < 0 else modes[k] for k in layout.spatial_modes
        ]
        return cls(
            list(layout.shape), per_dim, spatial, [modes[k] for k in layout.local_modes]
        )

    def split(self, mode: _Mode, outer: int) -> _Mode:
        """Split `mode` into (outer, size // outer) in place; return the inner."""
        inner = _Mode(mode.dim, mode.size // outer)
        mode.size = outer
        dim_list = self.per_dim[mode.dim]
        dim_list.insert(dim_list.index(mode) + 1, inner)
        for lst in (self.spatial, self.local):
            for i, entry in enumerate(lst):
                if entry is mode:
                    lst.insert(i + 1, inner)  # type: ignore[arg-type]
                    return inner
        raise AssertionError("mode in no list")

    def canonicalize(self) -> None:
        for lst in (self.spatial, self.local):
            lst[:] = [x for x in lst if x.size != 1]  # type: ignore[assignment]
        for dim_list in self.per_dim:
            dim_list[:] = [x for x in dim_list if x.size != 1]
        changed = True
        while changed:
            changed = False
            for lst in (self.spatial, self.local):
                for i in range(len(lst) - 1):
                    a, b = lst[i], lst[i + 1]
                    if isinstance(a, _Rep) and isinstance(b, _Rep):
                        a.size *= b.size
                    elif isinstance(a, _Mode) and isinstance(b, _Mode):
                        dim_list = self.per_dim[a.dim]
                        j = dim_list.index(a)
                        if b.dim != a.dim or j + 1 >= len(dim_list):
                            continue
                        if dim_list[j + 1] is not b:
                            continue
                        a.size *= b.size
                        del dim_list[j + 1]
                    else:
                        continue
                    del lst[i + 1]
                    changed = True
                    break

    def fields(self) -> tuple[tuple[int, ...], ...]:
        order = [m for dim_list in self.per_dim for m in dim_list]
        ids = {id(m): k for k, m in enumerate(order)}
        spatial = tuple(
            -x.size if isinstance(x, _Rep) else ids[id(x)] for x in self.spatial
        )
        local = tuple(ids[id(m)] for m in self.local)
        return tuple(self.shape), tuple(m.size for m in order), spatial, local

    def layout(self) -> Layout:
        return Layout(*self.fields())


# -- the layout value -----------------------------------------------------------


def _ints(values: Iterable[Any], what: str) -> tuple[int, ...]:
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | np.integer):
            raise LayoutError(f"layout {what} must hold ints, got {v!r}")
        out.append(int(v))
    return tuple(out)


@dataclass(frozen=True)
class Layout:
    """A canonical Tilus layout; see the module docstring for the algebra."""

    shape: tuple[int, ...]
    mode_shape: tuple[int, ...]
    spatial_modes: tuple[int, ...]
    local_modes: tuple[int, ...]
    # how many entries of mode_shape each dimension owns (derived, not compared)
    _counts: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        shape = _ints(self.shape, "shape")
        mode_shape = _ints(self.mode_shape, "mode_shape")
        spatial = _ints(self.spatial_modes, "spatial_modes")
        local = _ints(self.local_modes, "local_modes")
        if not shape:
            raise LayoutError("a layout needs at least one dimension")
        if any(s < 1 for s in shape + mode_shape):
            raise LayoutError(f"layout sizes must be >= 1: {shape}, {mode_shape}")
        counts = _group_modes(shape, mode_shape)
        used = [k for k in spatial if k >= 0] + list(local)
        if sorted(used) != list(range(len(mode_shape))):
            raise LayoutError(
                f"every mode of mode_shape {list(mode_shape)} must appear exactly "
                f"once in spatial {list(spatial)} or local {list(local)} "
                "(negative spatial entries are replications)"
            )
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "mode_shape", mode_shape)
        object.__setattr__(self, "spatial_modes", spatial)
        object.__setattr__(self, "local_modes", local)
        object.__setattr__(self, "_counts", counts)
        g = _Graph.of(self)
        g.canonicalize()
        shape, mode_shape, spatial, local = g.fields()
        object.__setattr__(self, "mode_shape", mode_shape)
        object.__setattr__(self, "spatial_modes", spatial)
        object.__setattr__(self, "local_modes", local)
        object.__setattr__(self, "_counts", _group_modes(shape, mode_shape))

    # -- sizes --------------------------------------------------------------
    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def modes_per_dim(self) -> tuple[int, ...]:
        """How many entries of `mode_shape` belong to each dimension."""
        return self._counts

    @property
    def size(self) -> int:
        """Elements in the tile."""
        return math.prod(self.shape)

    @property
    def num_workers(self) -> int:
        return math.prod(self._entry_size(k) for k in self.spatial_modes)

    @property
    def local_size(self) -> int:
        return math.prod(self.mode_shape[k] for k in self.local_modes)

    @property
    def replication(self) -> int:
        """How many workers hold each element."""
        return math.prod(-k for k in self.spatial_modes if k < 0)

    def _entry_size(self, k: int) -> int:
        return -k if k < 0 else self.mode_shape[k]

    def _dim_of(self) -> list[int]:
        return [d for d, c in enumerate(self.modes_per_dim) for _ in range(c)]

    # -- the map ------------------------------------------------------------
    def map(self, worker: Any, local: Any) -> tuple[Any, ...]:
        """The logical index that `worker` holds at `local`.

        Works elementwise on NumPy integer arrays as well as on ints.
        """
        if isinstance(worker, int) and not 0 <= worker < self.num_workers:
            raise LayoutError(f"worker {worker} out of range 0..{self.num_workers - 1}")
        if isinstance(local, int) and not 0 <= local < self.local_size:
            raise LayoutError(f"local {local} out of range 0..{self.local_size - 1}")
        digits: list[Any] = [0] * len(self.mode_shape)
        for entries, value in ((self.spatial_modes, worker), (self.local_modes, local)):
            for k in reversed(entries):
                size = self._entry_size(k)
                if k >= 0:
                    digits[k] = value % size
                value = value // size
        out: list[Any] = []
        start = 0
        for count in self.modes_per_dim:
            v: Any = 0
            for k in range(start, start + count):
                v = v * self.mode_shape[k] + digits[k]
            out.append(v)
            start += count
        return tuple(out)

    def locate(self, index: Sequence[int]) -> tuple[list[int], int]:
        """The workers that hold logical `index`, and its local index there."""
        if len(index) != self.rank or any(
            not 0 <= i < s for i, s in zip(index, self.shape, strict=True)
        ):
            raise LayoutError(f"index {tuple(index)} outside tile {self.shape}")
        digits = [0] * len(self.mode_shape)
        start = 0
        for i, count in zip(index, self.modes_per_dim, strict=True):
            for k in reversed(range(start, start + count)):
                digits[k] = i % self.mode_shape[k]
                i //= self.mode_shape[k]
            start += count
        local = 0
        for k in self.local_modes:
            local = local * self.mode_shape[k] + digits[k]
        workers = [0]
        for k in self.spatial_modes:
            size = self._entry_size(k)
            if k >= 0:
                workers = [w * size + digits[k] for w in workers]
            else:
                workers = [w * size + r for w in workers for r in range(size)]
        return workers, local

    def table(self) -> np.ndarray:
        """Logical indices of every (worker, local): shape (workers, local, rank)."""
        w, i = np.meshgrid(
            np.arange(self.num_workers), np.arange(self.local_size), indexing="ij"
        )
        return np.stack(self.map(w, i), axis=-1)

    def visualize(self) -> str:
        """A grid of `worker:local` for each element (rank 1 or 2, no replication)."""
        if self.rank > 2 or self.replication != 1:
            raise LayoutError("visualize() draws rank-1/2 layouts without replication")
        rows, cols = (1, self.shape[0]) if self.rank == 1 else self.shape
        grid = [[""] * cols for _ in range(rows)]
        for w in range(self.num_workers):
            for i in range(self.local_size):
                idx = self.map(w, i)
                r, c = (0, idx[0]) if self.rank == 1 else idx
                grid[r][c] = f"{w}:{i}"
        width = max(len(s) for row in grid for s in row)
        return "\n".join(" ".join(s.rjust(width) for s in row) for row in grid)

    # -- algebra ------------------------------------------------------------
    def __mul__(self, other: Layout) -> Layout:
        """B's tile repeated in the pattern of A (A's modes more significant)."""
        if not isinstance(other, Layout):
            return NotImplemented
        if other.rank != self.rank:
            raise LayoutError(
                f"layout product needs equal ranks, got {self.rank} and {other.rank}"
            )
        a, b = _Graph.of(self), _Graph.of(other)
        shape = [x * y for x, y in zip(a.shape, b.shape, strict=True)]
        per_dim = [x + y for x, y in zip(a.per_dim, b.per_dim, strict=True)]
        return _Graph(shape, per_dim, a.spatial + b.spatial, a.local + b.local).layout()

    def divide(self, other: Layout) -> Layout | None:
        """C with C * other == self, or None when `other` is not a factor."""
        if other.rank != self.rank or any(
            x % y for x, y in zip(self.shape, other.shape, strict=True)
        ):
            return None
        a, b = _Graph.of(self), _Graph.of(other)
        image: dict[int, _Mode] = {}  # id(b mode) -> a mode
        kept: list[int] = []  # per dim, how many leading a-modes belong to C
        for la, lb in zip(a.per_dim, b.per_dim, strict=True):
            pa, pb = len(la) - 1, len(lb) - 1
            while pb >= 0:
                if pa < 0:
                    return None
                ma, mb = la[pa], lb[pb]
                if ma.size == mb.size:
                    image[id(mb)] = ma
                    pa, pb = pa - 1, pb - 1
                elif ma.size % mb.size == 0:
                    image[id(mb)] = a.split(ma, ma.size // mb.size)
                    pb -= 1
                elif mb.size % ma.size == 0:
                    image[id(b.split(mb, mb.size // ma.size))] = ma
                    pa -= 1
                else:
                    return None
            kept.append(pa + 1)
        prefixes = []
        for la_list, lb_list in ((a.spatial, b.spatial), (a.local, b.local)):
            i, j = len(la_list) - 1, len(lb_list) - 1
            while j >= 0:
                if i < 0:
                    return None
                x, y = la_list[i], lb_list[j]
                if isinstance(y, _Rep):
                    if not isinstance(x, _Rep) or x.size % y.size:
                        return None
                    if x.size == y.size:
                        i -= 1
                    else:
                        x.size //= y.size
                    j -= 1
                elif image.get(id(y)) is x:
                    i, j = i - 1, j - 1
                else:
                    return None
            prefixes.append(i + 1)
        shape = [x // y for x, y in zip(self.shape, other.shape, strict=True)]
        per_dim = [la[:k] for la, k in zip(a.per_dim, kept, strict=True)]
        quotient = _Graph(
            shape,
            per_dim,
            a.spatial[: prefixes[0]],
            a.local[: prefixes[1]],  # type: ignore[arg-type]
        )
        try:
            result = quotient.layout()
        except LayoutError:
            return None
        return result if result * other == self else None

    def __truediv__(self, other: Layout) -> Layout:
        result = self.divide(other)
        if result is None:
            raise LayoutError(f"{other} does not divide {self}")
        return result

    # chained primitives, as in Tilus: local(2, 2).spatial(2, 4)
    def spatial(self, *shape: int) -> Layout:
        return self * spatial(*shape)

    def column_spatial(self, *shape: int) -> Layout:
        return self * column_spatial(*shape)

    def local(self, *shape: int) -> Layout:
        return self * local(*shape)

    def column_local(self, *shape: int) -> Layout:
        return self * column_local(*shape)

    def replicate(self, num_workers: int) -> Layout:
        return self * replicate(num_workers, rank=self.rank)

    def view(self, src_bits: int, dst_bits: int) -> Layout:
        """The layout of the same registers read as `dst_bits`-bit elements.

        Bits per worker do not change (Tilus's `view` invariant): the fastest
        local mode is rescaled by src_bits/dst_bits. When that mode is not the
        innermost of its dimension, or there is none, a new innermost local
        mode of the last dimension is added (narrowing only).
        """
        if src_bits < 1 or dst_bits < 1:
            raise LayoutError(f"view needs positive widths, got {src_bits}, {dst_bits}")
        if src_bits == dst_bits:
            return self
        g = _Graph.of(self)
        last = g.local[-1] if g.local else None
        if last is not None and g.per_dim[last.dim][-1] is last:
            bits = last.size * src_bits
            if bits % dst_bits:
                raise LayoutError(
                    f"view: the fastest local mode holds {last.size} x {src_bits} = "
                    f"{bits} bits, not a multiple of {dst_bits}"
                )
            g.shape[last.dim] = g.shape[last.dim] // last.size * (bits // dst_bits)
            last.size = bits // dst_bits
        elif src_bits % dst_bits == 0:
            factor = src_bits // dst_bits
            mode = _Mode(self.rank - 1, factor)
            g.per_dim[-1].append(mode)
            g.local.append(mode)
            g.shape[-1] *= factor
        else:
            raise LayoutError(
                f"view {src_bits} -> {dst_bits} bits needs a local mode that is "
                "innermost in its dimension to regroup"
            )
        return g.layout()

    def check_view(self, src_bits: int, other: Layout, dst_bits: int) -> None:
        """Raise unless `other` holds the same bits per worker as `self`."""
        if self.num_workers != other.num_workers:
            raise LayoutError(
                f"view: {self.num_workers} workers cannot become {other.num_workers}"
            )
        if self.local_size * src_bits != other.local_size * dst_bits:
            raise LayoutError(
                f"view: {self.local_size} x {src_bits} bits per worker != "
                f"{other.local_size} x {dst_bits}"
            )

    # -- text -----------------------------------------------------------------
    def __str__(self) -> str:
        groups, start = [], 0
        for count in self.modes_per_dim:
            groups.append(list(self.mode_shape[start : start + count]))
            start += count
        return (
            f"layout<shape={list(self.shape)}, modes={groups}, "
            f"spatial={list(self.spatial_modes)}, local={list(self.local_modes)}>"
        )

    def __repr__(self) -> str:
        return f"Layout.parse({str(self)!r})"

    @classmethod
    def from_modes(
        cls,
        modes: Sequence[Sequence[int]],
        spatial: Sequence[int],
        local: Sequence[int],
    ) -> Layout:
        """Build from per-dimension mode lists (the text form's fields)."""
        shape = tuple(math.prod(dim) for dim in modes)
        return cls(
            shape, tuple(s for dim in modes for s in dim), tuple(spatial), tuple(local)
        )

    @classmethod
    def parse(cls, text: str) -> Layout:
        """Parse `str(layout)` or an expression such as `local(2,2).spatial(2,4)`."""
        return _Parser(text).parse()


def _group_modes(
    shape: tuple[int, ...], mode_shape: tuple[int, ...]
) -> tuple[int, ...]:
    counts, k = [], 0
    for size in shape:
        start, prod = k, 1
        while prod < size and k < len(mode_shape):
            prod *= mode_shape[k]
            k += 1
        if prod != size:
            raise LayoutError(
                f"mode_shape {list(mode_shape)} does not factor shape {list(shape)}"
            )
        counts.append(k - start)
    if any(s != 1 for s in mode_shape[k:]):
        raise LayoutError(
            f"mode_shape {list(mode_shape)} has modes beyond shape {list(shape)}"
        )
    counts[-1] += len(mode_shape) - k  # trailing size-1 modes
    return tuple(counts)


# -- primitives -------------------------------------------------------------------


def _primitive(shape: Sequence[int], is_spatial: bool, column: bool) -> Layout:
    shape = _ints(shape, "shape")
    if not shape:
        raise LayoutError("a layout primitive needs at least one size")
    order = list(range(len(shape)))
    if column:
        order.reverse()
    entries = tuple(order)
    return Layout(
        shape, shape, entries if is_spatial else (), () if is_spatial else entries
    )


def spatial(*shape: int) -> Layout:
    """One element per worker, workers numbered row-major."""
    return _primitive(shape, True, False)


def column_spatial(*shape: int) -> Layout:
    """One element per worker, workers numbered column-major."""
    return _primitive(shape, True, True)


def local(*shape: int) -> Layout:
    """One worker holds the whole tile, row-major."""
    return _primitive(shape, False, False)


def column_local(*shape: int) -> Layout:
    """One worker holds the whole tile, column-major."""
    return _primitive(shape, False, True)


def replicate(num_workers: int, rank: int = 1) -> Layout:
    """`num_workers` workers that all hold the same (size-1) tile."""
    if num_workers < 1 or rank < 1:
        raise LayoutError(
            f"replicate needs num_workers, rank >= 1, got {num_workers}, {rank}"
        )
    return Layout((1,) * rank, (), (-num_workers,), ())


_PRIMITIVES = {
    "spatial": spatial,
    "column_spatial": column_spatial,
    "local": local,
    "column_local": column_local,
}


class _Parser:
    """Recursive descent over the layout text and expression grammar.

    expr := chain ('*' chain)* ; chain := atom ('.' call)* ;
    atom := call | 'layout<' fields '>' | '(' expr ')' ; call := name '(' args ')'
    """

    _TOKEN = re.compile(r"\s*(-?\d+|[A-Za-z_]\w*|[()\[\]<>,.*=])")

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[str] = []
        pos = 0
        while pos < len(text):
            mt = self._TOKEN.match(text, pos)
            if mt is None:
                if text[pos:].strip():
                    self.fail(f"unexpected character {text[pos]!r}")
                break
            self.tokens.append(mt[1])
            pos = mt.end()
        self.i = 0

    def fail(self, why: str) -> None:
        raise LayoutError(f"cannot parse layout {self.text!r}: {why}")

    def peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (expected is not None and tok != expected):
            self.fail(f"expected {expected or 'more'}, got {tok or 'end of text'}")
        self.i += 1
        return tok  # type: ignore[return-value]

    def parse(self) -> Layout:
        result = self.expr()
        if self.peek() is not None:
            self.fail(f"unexpected {self.peek()!r}")
        return result

    def expr(self) -> Layout:
        result = self.chain()
        while self.peek() == "*":
            self.take()
            result = result * self.chain()
        return result

    def chain(self) -> Layout:
        result = self.atom()
        while self.peek() == ".":
            self.take()
            name, args, _ = self.call()
            if name == "replicate":
                result = result.replicate(*args)
            elif name in _PRIMITIVES:
                result = getattr(result, name)(*args)
            else:
                self.fail(f"unknown layout method {name!r}")
        return result

    def atom(self) -> Layout:
        if self.peek() == "(":
            self.take()
            result = self.expr()
            self.take(")")
            return result
        if self.peek() == "layout":
            return self.fields()
        name, args, kwargs = self.call()
        if name == "replicate":
            return replicate(*args, **kwargs)
        if name not in _PRIMITIVES or kwargs:
            self.fail(f"unknown layout primitive {name!r}")
        return _PRIMITIVES[name](*args)

    def call(self) -> tuple[str, list[int], dict[str, int]]:
        name = self.take()
        self.take("(")
        args: list[int] = []
        kwargs: dict[str, int] = {}
        while self.peek() != ")":
            tok = self.take()
            if self.peek() == "=":
                self.take()
                kwargs[tok] = self.int()
            else:
                self.i -= 1
                args.append(self.int())
            if self.peek() == ",":
                self.take()
        self.take(")")
        return name, args, kwargs

    def int(self) -> int:
        tok = self.take()
        if not re.fullmatch(r"-?\d+", tok):
            self.fail(f"expected an integer, got {tok!r}")
        return int(tok)

    def int_list(self) -> list[int]:
        self.take("[")
        out: list[int] = []
        while self.peek() != "]":
            out.append(self.int())
            if self.peek() == ",":
                self.take()
        self.take("]")
        return out

    def fields(self) -> Layout:
        self.take("layout")
        self.take("<")
        values: dict[str, Any] = {}
        for key in ("shape", "modes", "spatial", "local"):
            self.take(key)
            self.take("=")
            if key == "modes":
                self.take("[")
                groups = []
                while self.peek() != "]":
                    groups.append(self.int_list())
                    if self.peek() == ",":
                        self.take()
                self.take("]")
                values[key] = groups
            else:
                values[key] = self.int_list()
            if key != "local":
                self.take(",")
        self.take(">")
        modes = values["modes"]
        if len(modes) != len(values["shape"]):
            self.fail("modes needs one list per dimension of shape")
        layout = Layout(
            tuple(values["shape"]),
            tuple(s for group in modes for s in group),
            tuple(values["spatial"]),
            tuple(values["local"]),
        )
        if layout.modes_per_dim != tuple(len(g) for g in modes):
            self.fail("modes do not group by dimension as shape says")
        return layout
