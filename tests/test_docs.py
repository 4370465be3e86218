"""IR shown in the docs parses, verifies and prints back unchanged in meaning."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lpcc.ir.dialect import parse_module, print_module

DOCS = sorted((Path(__file__).parent.parent / "docs").glob("*.md"))
BLOCKS = [
    (doc.name, block)
    for doc in DOCS
    for block in re.findall(r"```mlir\n(.*?)```", doc.read_text(), re.S)
]


@pytest.mark.parametrize("doc, text", BLOCKS, ids=[d for d, _ in BLOCKS])
def test_doc_ir_parses(doc: str, text: str) -> None:
    module = parse_module(text, doc)
    assert print_module(parse_module(print_module(module))) == print_module(module)


def test_docs_have_ir() -> None:
    assert BLOCKS
