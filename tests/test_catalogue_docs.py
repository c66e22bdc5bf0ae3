"""The generated signature page is current, and the contributor guides' examples run."""

from __future__ import annotations

from mithril.framework.ops.signatures import PAGE, signatures_markdown


def test_signature_page_is_current() -> None:
    assert PAGE.read_text() == signatures_markdown(), (
        "docs/dev/catalogue-signatures.md is stale: run "
        "`python -m mithril.framework.ops.signatures`")
