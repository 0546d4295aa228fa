"""The name sanitiser: no remote name can escape the mirror or break a file system."""

from __future__ import annotations

import posixpath

from hypothesis import example, given
from hypothesis import strategies as st

from agent.engine.paths import (
    MAX_NAME_BYTES,
    PLAIN,
    _already_safe,
    _sanitize,
    disambiguate,
    mirror_path,
    plain_names,
    sanitize_component,
)


@given(st.text(max_size=400), st.lists(st.text(max_size=80), max_size=4))
def test_no_generated_name_escapes_the_source_folder(name: str, folder: list[str]) -> None:
    path = mirror_path("src", folder, name)
    normalised = posixpath.normpath(posixpath.join("/mirror", path))
    assert normalised.startswith("/mirror/src/")
    assert len(path.split("/")) == len(folder) + 2


@given(st.text(max_size=600))
def test_a_component_is_short_safe_and_never_special(name: str) -> None:
    part = sanitize_component(name)
    assert part not in ("", ".", "..")
    assert "/" not in part
    assert "\\" not in part
    assert "\x00" not in part
    assert not any(ord(c) < 32 or ord(c) == 127 for c in part)
    assert len(part.encode()) <= 255


def test_traversal_and_separators_are_neutralised() -> None:
    assert mirror_path("s", ["..", "a/b"], "../evil.pdf") == "s/_/a_b/.._evil.pdf"
    assert sanitize_component("/etc/passwd") == "_etc_passwd"


def test_reserved_and_trailing_names_are_handled() -> None:
    assert sanitize_component("CON.txt") == "_CON.txt"
    assert sanitize_component("report. ") == "report"
    assert sanitize_component("a\tb") == "a_b"


def test_long_names_keep_their_extension() -> None:
    part = sanitize_component("x" * 500 + ".pdf")
    assert part.endswith(".pdf")
    assert len(part.encode()) <= 200


def test_disambiguation_is_stable_and_distinct() -> None:
    assert disambiguate("a.pdf", "id-1") == disambiguate("a.pdf", "id-1")
    assert disambiguate("a.pdf", "id-1") != disambiguate("a.pdf", "id-2")
    assert disambiguate("a.pdf", "id-1").endswith(".pdf")


PRINTABLE_ASCII = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=220)
PIECES = st.lists(
    st.sampled_from(["a", " ", ".", "pdf", "Con", "*", "\t", "-", "7", "_", "LPT1"]), max_size=7
).map("".join)


@given(st.one_of(PIECES, PRINTABLE_ASCII, st.text(max_size=220)))
@example("a .pdf")
@example("a..pdf")
@example("con.txt")
@example("report. ")
@example("x" * 201)
@example("COM1.txt")
@example("lpt9")
@example("com10.txt")
@example("con x.pdf")
@example("\u212a.pdf")  # the Kelvin sign: a `k` only to a Unicode-folding expression
def test_the_fast_path_returns_exactly_what_the_full_sanitiser_would(name: str) -> None:
    """Names taken as they are (most of them, cheaply) are the ones sanitising leaves alone."""
    if _already_safe(name):
        assert _sanitize(name) == name
    if len(name) <= MAX_NAME_BYTES and PLAIN.fullmatch(name):
        assert _already_safe(name)
    assert sanitize_component(name) == _sanitize(name)


NAMES = st.lists(st.one_of(PIECES, PRINTABLE_ASCII, st.text(max_size=220)), max_size=6)


@given(NAMES)
@example(["a\nb"])  # two plain lines, but one name: not plain
@example(["report.pdf", "con"])
@example(["con\n"])
@example(["lpt1", "a"])
@example(["a", ""])
@example(["x" * 201])
@example(["a\n", "b"])
@example([])
def test_a_window_of_names_is_plain_exactly_when_each_of_them_is(names: list[str]) -> None:
    """The one-expression check of a window agrees with the check of each name, and what
    it calls plain the full sanitiser leaves as it is."""
    each = all(len(n) <= MAX_NAME_BYTES and PLAIN.fullmatch(n) is not None for n in names)
    assert plain_names(names) == each
    if each:
        assert all(_sanitize(n) == n for n in names)
