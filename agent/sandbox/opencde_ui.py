"""HTML pages of the OpenCDE sandbox's web UI: the document picker and simple info pages.

Element ids are a contract with headless-browser tests: `select-button`, `cancel-button`
and one checkbox `doc-<document_id>` (name `document_id`) per listed document.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from html import escape
from pathlib import Path
from string import Template

from agent.sandbox.opencde_data import Document

TEMPLATE_PATH = Path(__file__).with_name("opencde_select.html")
MAX_ROWS = 200


@cache
def _template() -> Template:
    return Template(TEMPLATE_PATH.read_text(encoding="utf-8"))


def matches_extensions(document: Document, extensions: tuple[str, ...]) -> bool:
    """Whether the latest file name ends with one of `extensions` (all when none given)."""
    if not extensions:
        return True
    name = document.latest.name.lower()
    return any(name.endswith(ext.lower()) for ext in extensions)


def select_page(
    *,
    action: str,
    documents: Iterable[Document],
    total: int,
    client: str,
    notice: str = "",
) -> str:
    """The picker: a checkbox per document (at most MAX_ROWS), Select and Cancel buttons."""
    shown = [doc for _, doc in zip(range(MAX_ROWS), documents, strict=False)]
    rows = "\n".join(_row(doc) for doc in shown)
    return _template().substitute(
        user="demo.user@example.com",
        client=escape(client),
        action=escape(action, quote=True),
        rows=rows,
        shown=escape(f"Showing {len(shown)} of {total} documents."),
        notice=f'<p class="notice" role="alert">{escape(notice)}</p>' if notice else "",
    )


def _row(document: Document) -> str:
    doc_id = escape(document.document_id, quote=True)
    latest = document.latest
    return (
        f'      <tr><td><input type="checkbox" name="document_id" value="{doc_id}" '
        f'id="doc-{doc_id}"></td>'
        f'<td><label for="doc-{doc_id}">{escape(document.title)}</label></td>'
        f"<td>{escape(latest.name)}</td><td>{escape(latest.number)}</td>"
        f'<td class="size">{latest.size}</td></tr>'
    )


def message_page(title: str, message: str) -> str:
    """A minimal page for errors and confirmations."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title></head>\n<body><h1>{escape(title)}</h1>"
        f"<p>{escape(message)}</p></body></html>\n"
    )


def details_page(document: Document) -> str:
    """The `document_details` page: the document's versions in a table."""
    rows = "\n".join(
        f"<tr><td>{v.index}</td><td>{escape(v.number)}</td><td>{escape(v.name)}</td>"
        f"<td>{v.size}</td></tr>"
        for v in reversed(document.versions)
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(document.title)}</title></head>\n<body>"
        f"<h1>{escape(document.title)}</h1><p>Document id "
        f"<code>{escape(document.document_id)}</code></p>\n<table><thead><tr><th>Index</th>"
        "<th>Version</th><th>File</th><th>Size (bytes)</th></tr></thead><tbody>\n"
        f"{rows}\n</tbody></table></body></html>\n"
    )
