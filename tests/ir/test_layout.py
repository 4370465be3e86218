"""The Tilus layout algebra: hand-derived cases and properties on random layouts."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from lpcc import Layout, LayoutError
from lpcc.ir.layout import column_local, column_spatial, local, replicate, spatial


@st.composite
def layouts(
    draw: st.DrawFn, rank: int | None = None, replication: bool = True
) -> Layout:
    """Random small layouts: each dimension split into 0-2 modes of size 1-4,
    each mode sent to the worker or the local index in a random order, plus
    optional replication entries."""
    rank = rank if rank is not None else draw(st.integers(1, 3))
    modes = [draw(st.lists(st.integers(1, 4), max_size=2)) for _ in range(rank)]
    flat = [s for dim in modes for s in dim]
    ids = list(range(len(flat)))
    is_spatial = [draw(st.booleans()) for _ in ids]
    sp = draw(st.permutations([i for i in ids if is_spatial[i]]))
    lo = draw(st.permutations([i for i in ids if not is_spatial[i]]))
    if replication and draw(st.booleans()):
        pos = draw(st.integers(0, len(sp)))
        sp = [*sp[:pos], -draw(st.integers(2, 3)), *sp[pos:]]
    return Layout.from_modes(modes, sp, lo)


def _pairs(layout: Layout) -> list[tuple[int, int, tuple[int, ...]]]:
    return [
        (w, i, tuple(int(v) for v in layout.map(w, i)))
        for w in range(layout.num_workers)
        for i in range(layout.local_size)
    ]


# -- hand-derived cases ---------------------------------------------------------


def test_tilus_worked_example() -> None:
    """shape [4,6], modes [2,2|3,2], spatial [0,2], local [3,1]:
    t = (r//2)*3 + c//2, i = (c%2)*2 + r%2, so (3,5) <-> (t=5, i=3)."""
    layout = Layout((4, 6), (2, 2, 3, 2), (0, 2), (3, 1))
    for r in range(4):
        for c in range(6):
            t, i = (r // 2) * 3 + c // 2, (c % 2) * 2 + r % 2
            assert layout.map(t, i) == (r, c)
            assert layout.locate((r, c)) == ([t], i)
    assert layout.map(5, 3) == (3, 5)


def test_local_spatial_product_grid() -> None:
    """local(2,2).spatial(2,4): r = (i//2)*2 + t//4, c = (i%2)*4 + t%4."""
    layout = local(2, 2).spatial(2, 4)
    assert layout == local(2, 2) * spatial(2, 4)
    assert (layout.shape, layout.num_workers, layout.local_size) == ((4, 8), 8, 4)
    for t in range(8):
        for i in range(4):
            assert layout.map(t, i) == ((i // 2) * 2 + t // 4, (i % 2) * 4 + t % 4)
    assert layout.visualize().splitlines()[0].split() == [
        "0:0",
        "1:0",
        "2:0",
        "3:0",
        "0:1",
        "1:1",
        "2:1",
        "3:1",
    ]


def test_mma_fragments() -> None:
    """PTX mma.m16n8k16 f16 fragments as compositions (derived from the ISA)."""
    b = local(2, 1).column_spatial(4, 8).local(2, 1)  # B: 16 x 8
    a = column_local(2, 2).spatial(8, 4).local(1, 2)  # A: 16 x 16
    c = local(2, 1).spatial(8, 4).local(1, 2)  # C: 16 x 8
    for t in range(32):
        for i in range(4):
            assert b.map(t, i) == (8 * (i // 2) + 2 * (t % 4) + i % 2, t // 4)
            assert c.map(t, i) == (t // 4 + 8 * (i // 2), 2 * (t % 4) + i % 2)
        for i in range(8):
            row = t // 4 + 8 * ((i // 2) % 2)
            col = 2 * (t % 4) + i % 2 + 8 * (i // 4)
            assert a.map(t, i) == (row, col)


@pytest.mark.parametrize(
    "a, b, quotient",
    [
        (spatial(2, 12), spatial(1, 3), spatial(2, 4)),
        (spatial(6), spatial(3), spatial(2)),
        (spatial(2, 12).local(2, 3), local(2, 3), spatial(2, 12)),
        (local(2, 2).spatial(2, 4), spatial(2, 4), local(2, 2)),
        (spatial(4).replicate(6), replicate(2), spatial(4).replicate(3)),
    ],
)
def test_divide_examples(a: Layout, b: Layout, quotient: Layout) -> None:
    assert a / b == quotient
    assert quotient * b == a


@pytest.mark.parametrize(
    "a, b",
    [
        (local(2, 2).spatial(2, 4), local(2, 2)),  # not a suffix
        (spatial(6), spatial(4)),  # sizes do not divide
        (spatial(4, 4), spatial(4)),  # rank
        (spatial(4), local(2)),  # spatial vs local
        (spatial(8), replicate(2)),
    ],
)
def test_divide_refuses_non_factors(a: Layout, b: Layout) -> None:
    assert a.divide(b) is None
    with pytest.raises(LayoutError, match="does not divide"):
        a / b


def test_replication_and_locate() -> None:
    layout = spatial(4).replicate(2)  # worker = 2 * element + copy
    assert (layout.num_workers, layout.replication, layout.local_size) == (8, 2, 1)
    assert layout.locate((1,)) == ([2, 3], 0)
    assert [layout.map(w, 0)[0] for w in range(8)] == [0, 0, 1, 1, 2, 2, 3, 3]
    front = replicate(2).spatial(4)  # worker = 4 * copy + element
    assert front.locate((1,)) == ([1, 5], 0)


def test_canonical_form_merges_and_drops() -> None:
    assert local(2, 3) == Layout((2, 3), (2, 1, 3), (), (0, 1, 2))
    assert spatial(4) * spatial(2) == spatial(8)
    assert spatial(1, 8) == Layout((1, 8), (8,), (0,), ())
    assert column_spatial(4, 1) == spatial(4, 1)
    assert str(local(2, 2) * spatial(2, 4)) == (
        "layout<shape=[4, 8], modes=[[2, 2], [2, 4]], spatial=[1, 3], local=[0, 2]>"
    )


def test_view_keeps_bits_per_worker() -> None:
    """The Tilus int6 example: 8 int6 per worker are 6 bytes."""
    int6 = spatial(32).local(8)
    as_bytes = int6.view(6, 8)
    assert as_bytes == spatial(32).local(6)
    assert as_bytes.view(8, 6) == int6
    assert spatial(32).view(32, 8) == spatial(32).local(4)  # f32 lanes as bytes
    int6.check_view(6, as_bytes, 8)
    with pytest.raises(LayoutError, match="bits per worker"):
        int6.check_view(6, spatial(32).local(5), 8)
    with pytest.raises(LayoutError, match="not a multiple of 8"):
        spatial(32).local(3).view(3, 8)


def test_text_forms() -> None:
    layout = local(2, 1).column_spatial(4, 8).local(2, 1)
    assert Layout.parse(str(layout)) == layout
    assert Layout.parse("local(2,1).column_spatial(4, 8).local(2,1)") == layout
    assert Layout.parse("(local(2,2) * spatial(2,4))") == local(2, 2).spatial(2, 4)
    assert Layout.parse("replicate(2, rank=2) * local(2, 2)") == replicate(
        2, 2
    ) * local(2, 2)
    assert Layout.parse("spatial(4).replicate(3)") == spatial(4).replicate(3)


@pytest.mark.parametrize(
    "text, message",
    [
        ("spatial(2", "expected"),
        ("nope(2)", "unknown layout primitive"),
        ("spatial(2).nope(3)", "unknown layout method"),
        ("layout<shape=[4], modes=[[2], [2]], spatial=[0], local=[1]>", "one list per"),
        ("spatial(2) $", "unexpected character"),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(LayoutError, match=message):
        Layout.parse(text)


def test_construction_errors() -> None:
    with pytest.raises(LayoutError, match="exactly once"):
        Layout((4,), (4,), (), ())
    with pytest.raises(LayoutError, match="does not factor"):
        Layout((4,), (3,), (0,), ())
    with pytest.raises(LayoutError, match="equal ranks"):
        spatial(2) * spatial(2, 2)
    with pytest.raises(LayoutError, match="out of range"):
        spatial(4).map(4, 0)


# -- properties -------------------------------------------------------------------


@given(layouts())
def test_text_round_trip(layout: Layout) -> None:
    assert Layout.parse(str(layout)) == layout
    assert (
        Layout(
            layout.shape, layout.mode_shape, layout.spatial_modes, layout.local_modes
        )
        == layout
    )


@given(st.data())
def test_product_is_associative(data: st.DataObject) -> None:
    rank = data.draw(st.integers(1, 3))
    a, b, c = (data.draw(layouts(rank)) for _ in range(3))
    assert (a * b) * c == a * (b * c)


@given(st.data())
def test_product_matches_its_definition(data: st.DataObject) -> None:
    """(A*B)(t, i) = A(t // T_B, i // L_B) * shape_B + B(t % T_B, i % L_B)."""
    rank = data.draw(st.integers(1, 3))
    a, b = data.draw(layouts(rank)), data.draw(layouts(rank))
    ab = a * b
    t, i = np.meshgrid(
        np.arange(ab.num_workers), np.arange(ab.local_size), indexing="ij"
    )
    outer = a.map(t // b.num_workers, i // b.local_size)
    inner = b.map(t % b.num_workers, i % b.local_size)
    for got, o, size, n in zip(ab.map(t, i), outer, b.shape, inner, strict=True):
        assert np.array_equal(got, o * size + n)


@given(st.data())
def test_divide_inverts_product(data: st.DataObject) -> None:
    rank = data.draw(st.integers(1, 3))
    a, b = data.draw(layouts(rank)), data.draw(layouts(rank))
    assert (a * b) / b == a


@given(layouts(replication=False))
def test_without_replication_a_layout_is_a_bijection(layout: Layout) -> None:
    assume(layout.replication == 1)
    assert layout.num_workers * layout.local_size == layout.size
    seen = {idx for _, _, idx in _pairs(layout)}
    assert seen == set(np.ndindex(*layout.shape))


@given(layouts())
def test_replication_counts(layout: Layout) -> None:
    counts = Counter(idx for _, _, idx in _pairs(layout))
    assert set(counts) == set(np.ndindex(*layout.shape))
    assert set(counts.values()) == {layout.replication}
    assert layout.num_workers * layout.local_size == layout.size * layout.replication


@given(layouts())
def test_locate_inverts_map(layout: Layout) -> None:
    for w, i, idx in _pairs(layout):
        workers, local_index = layout.locate(idx)
        assert w in workers and local_index == i
        assert len(workers) == layout.replication


@given(layouts(), st.sampled_from([(3, 1), (4, 2), (6, 2), (8, 4), (2, 1)]))
def test_view_round_trip(layout: Layout, widths: tuple[int, int]) -> None:
    src, dst = widths
    viewed = layout.view(src, dst)
    assert viewed.num_workers == layout.num_workers
    assert viewed.local_size * dst == layout.local_size * src
    assert viewed.view(dst, src) == layout


def test_vectorized_map_agrees_with_scalar_map() -> None:
    layout = local(2, 1).column_spatial(4, 8).local(2, 1)
    table = layout.table()
    assert table.shape == (32, 4, 2)
    for t in range(32):
        for i in range(4):
            assert tuple(table[t, i]) == layout.map(t, i)
