"""The filter decision (pure): which rule leaves a document out, and the glob syntax check."""

from __future__ import annotations

import tomllib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.config.globs import glob_problem
from agent.config.load import parse_config
from agent.engine.filters import (
    FILTER_PREFIX,
    Filters,
    apply_filters,
    excluded_by,
    files_to_remove,
    recall_size_exclusions,
    size_refusal,
)
from agent.engine.plan import plan_window
from agent.models import DocState, KnownDocument, RemoteDocument
from agent.templates import FILTERS

SEGMENT = st.text(alphabet="abcXYZ019 ._-", min_size=1, max_size=8).filter(
    lambda s: s not in (".", "..")
)
PATHS = st.lists(SEGMENT, min_size=1, max_size=5).map("/".join)


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("**/drafts/**", "drafts/a.pdf", True),
        ("**/drafts/**", "x/y/drafts/z/a.pdf", True),
        ("**/drafts/**", "x/drafts.pdf", False),
        ("*.pdf", "a.pdf", True),
        ("*.pdf", "x/a.pdf", False),  # * stays within one segment
        ("**/*.pdf", "a.pdf", True),  # ** matches no folder too
        ("a/*/c.txt", "a/b/c.txt", True),
        ("a/*/c.txt", "a/b/b/c.txt", False),
        ("**/*.{pdf,docx}", "r/s.docx", True),
        ("Report.PDF", "report.pdf", False),  # case-sensitive by default
        (".hidden/*", ".hidden/f", True),  # a leading dot is not special
    ],
)
def test_exclude_pattern_matches_as_documented(pattern: str, path: str, matches: bool) -> None:
    """`**` spans folders (none included), `*` one segment, `{a,b}` alternatives."""
    rule = excluded_by(Filters(exclude=(pattern,)), path, 10)
    assert (rule == f'exclude "{pattern}"') is matches


def test_ignore_case_folds_both_include_and_exclude() -> None:
    """With ignore_case, `*.PDF` matches `a.pdf` for include and exclude alike."""
    assert excluded_by(Filters(exclude=("*.PDF",), ignore_case=True), "a.pdf", 1) is not None
    assert excluded_by(Filters(include=("*.PDF",), ignore_case=True), "a.pdf", 1) is None
    assert excluded_by(Filters(include=("*.PDF",)), "a.pdf", 1) is not None


def test_rules_in_order_exclude_then_include_then_sizes() -> None:
    """The first rule that leaves a document out is named: exclude beats include."""
    both = Filters(include=("**",), exclude=("a/**",), min_size=5, max_size=10)
    assert excluded_by(both, "a/b", 7) == 'exclude "a/**"'
    assert excluded_by(Filters(include=("x/*", "y")), "z", 7) == (
        'include: matches none of "x/*", "y"'
    )
    assert excluded_by(both, "b", 4) == "min_size 5 bytes"
    assert excluded_by(Filters(max_size=10 << 20), "b", (10 << 20) + 1) == "max_size 10 MiB"
    assert excluded_by(both, "b", 5) is None
    assert excluded_by(both, "b", 10) is None


def test_unknown_size_passes_the_size_rules() -> None:
    """A listing without a size cannot be judged by size: the document passes."""
    assert excluded_by(Filters(min_size=1, max_size=2), "a", None) is None


@given(PATHS)
def test_globstar_matches_every_path_and_an_exact_pattern_its_own(path: str) -> None:
    """`**` leaves out any path; a path written as a pattern (escaped) leaves out itself."""
    assert excluded_by(Filters(exclude=("**",)), path, 1) is not None
    escaped = "".join(f"[{c}]" if c in "*?[]{}\\" else c for c in path)
    assert excluded_by(Filters(exclude=(escaped,)), path, 1) is not None
    assert excluded_by(Filters(include=(escaped,)), path, 1) is None


def test_apply_filters_marks_skips_with_the_rule_and_keeps_source_reasons() -> None:
    """Left-out documents get `filter: <rule>` as skip reason; the source's own skip reason
    and the documents that pass are untouched; paths are the sanitised ones in the source."""
    docs = [
        RemoteDocument("1", "v", "a.pdf", ("Drafts",)),
        RemoteDocument("2", "v", "b.pdf", ("Drafts",), skip_reason="URL only"),
        RemoteDocument("3", "v", "c:d.pdf", ("Final",)),
    ]
    out = apply_filters(Filters(exclude=("Drafts/**", "Final/c_d.pdf")), "src", docs)
    assert out.excluded == {"1": 'exclude "Drafts/**"', "3": 'exclude "Final/c_d.pdf"'}
    assert [d.skip_reason for d in out.listing] == [
        FILTER_PREFIX + 'exclude "Drafts/**"',
        "URL only",
        FILTER_PREFIX + 'exclude "Final/c_d.pdf"',
    ]
    assert apply_filters(Filters(), "src", docs).listing == docs


def test_files_to_remove_only_under_remove_and_only_files_the_agent_placed() -> None:
    """`remove` lists the excluded documents whose row still holds a file, whatever their
    state (a cut-short pass is finished); `keep` lists none."""
    known = {
        "1": KnownDocument("1", "v", "s/a", DocState.MIRRORED, size=3, mtime_ns=7),
        "2": KnownDocument("2", "v", "s/b", DocState.SKIPPED, size=4),
        "3": KnownDocument("3", "v", None, DocState.SKIPPED),
        "4": KnownDocument("4", "v", "s/d", DocState.FAILED),  # never had a file
    }
    excluded = {"1": "r1", "2": "r2", "3": "r3", "4": "r4", "5": "r5"}
    assert files_to_remove(excluded, known, "keep") == []
    removals = files_to_remove(excluded, known, "remove")
    assert [(r.remote_id, r.rel_path, r.size, r.mtime_ns, r.rule) for r in removals] == [
        ("1", "s/a", 3, 7, "r1"),
        ("2", "s/b", 4, None, "r2"),
    ]


@pytest.mark.parametrize(
    "pattern",
    ["", "  ", "/abs/*", "drafts/", "a/../b", "./a", "a**", "**b/c", "a//b", "x[ab", "{a,b", "a}"],
)
def test_glob_problem_refuses_what_would_match_otherwise_than_meant(pattern: str) -> None:
    """Patterns wcmatch would read literally or another way are refused with a reason."""
    assert glob_problem(pattern)


@pytest.mark.parametrize(
    "pattern", ["**", "**/drafts/**", "*.pdf", "a/[!b]*/c?", "[[]x", "[}]", "**/*.{pdf,docx}"]
)
def test_glob_problem_accepts_documented_patterns(pattern: str) -> None:
    """The documented forms pass the check."""
    assert glob_problem(pattern) is None


def test_the_init_templates_filter_example_is_valid_when_uncommented() -> None:
    """Every key of the template's commented filter example, uncommented, passes the
    configuration's checks."""
    lines = [line[2:].split("  #")[0] for line in FILTERS.splitlines()[1:]]
    keys = tomllib.loads("\n".join(lines))
    assert set(keys) == {"include", "exclude", "ignore_case", "max_size", "on_filter_exclude"}
    source = {"name": "hd", "type": "huddle", "client_id": "c", "refresh_token": "r"}
    data = {"agent": {"mirror_dir": "/m"}, "sources": [{**source, "workspaces": ["1"], **keys}]}
    (parsed,) = parse_config(data, {}).sources
    assert parsed.include == tuple(keys["include"])
    assert parsed.max_size == 500 << 20


def test_a_skip_is_recorded_again_when_its_rule_changes() -> None:
    """A document still left out, by another rule now, is planned as a skip again (status
    then shows the new rule); by the same rule it is unchanged."""
    listed = apply_filters(Filters(max_size=5), "s", [RemoteDocument("1", "v", "a.pdf", size=9)])
    (doc,) = listed.listing
    same = KnownDocument("1", "v", None, DocState.SKIPPED, reason=doc.skip_reason)
    other = KnownDocument("1", "v", None, DocState.SKIPPED, reason='filter: exclude "*"')
    assert plan_window([doc], {}, {"1": same}, {}).skips == []
    assert plan_window([doc], {}, {"1": other}, {}).skips == [doc]


def test_a_size_refusal_names_the_rule_and_exists_only_with_size_rules() -> None:
    """The download-time check refuses exactly what the size rules leave out, by their
    words; without size rules there is nothing to check."""
    refuse = size_refusal(Filters(min_size=10, max_size=100))
    assert refuse is not None
    assert [refuse(n) is None for n in (9, 10, 100, 101)] == [False, True, True, False]
    too_big = refuse(101)
    assert too_big is not None
    assert too_big.message == FILTER_PREFIX + "max_size 100 bytes"
    assert size_refusal(Filters(exclude=("**/x",))) is None


def test_a_size_skip_a_download_found_is_recalled_only_for_its_version_and_rule() -> None:
    """A document listed without a size, recorded skipped by a size rule at this version,
    stays skipped while the rule reads the same; a new version or a new limit is measured
    again, and a listed size is judged by the listing."""
    doc = RemoteDocument(remote_id="a", version="v1", name="a.pdf")
    reason = FILTER_PREFIX + "max_size 100 bytes"
    known = {"a": KnownDocument("a", "v1", None, DocState.SKIPPED, reason=reason)}
    excluded: dict[str, str] = {}
    (kept,) = recall_size_exclusions(Filters(max_size=100), [doc], known, excluded)
    assert kept.skip_reason == reason
    assert excluded == {"a": "max_size 100 bytes"}
    newer = RemoteDocument(remote_id="a", version="v2", name="a.pdf")
    listed = RemoteDocument(remote_id="a", version="v1", name="a.pdf", size=5)
    for filters, again in ((Filters(max_size=200), doc), (Filters(max_size=100), newer)):
        (left,) = recall_size_exclusions(filters, [again], known, {})
        assert left.skip_reason is None
    (judged,) = recall_size_exclusions(Filters(max_size=100), [listed], known, {})
    assert judged.skip_reason is None
