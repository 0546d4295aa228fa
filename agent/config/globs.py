"""The glob patterns of source filters: their syntax checked at load time, and compiled.

A pattern matches a document's path inside its source's mirror folder (`Design/a.pdf`, no
leading `/`, always `/` between folders). `*`, `?` and `[...]` match within one path
segment, `**` as a whole segment matches any number of folders (none included), `{a,b}`
either alternative, `\\` escapes the next character. Matching is by wcmatch
(`GLOBSTAR | BRACE | DOTGLOB`): a leading dot is not special in a mirror.

The check refuses what wcmatch would silently read another way than its writer meant: an
unclosed `[` or `{` (taken literally), `**` inside a name (a mere `*`), a trailing `/`
(nothing is a folder here: `drafts/**` is), absolute paths and `.`/`..` segments.
"""

from __future__ import annotations

import functools

from wcmatch import glob

FLAGS = glob.GLOBSTAR | glob.BRACE | glob.DOTGLOB


def glob_problem(pattern: str) -> str | None:
    """What is wrong with `pattern`, in words, or None when it is a pattern we match."""
    if not pattern.strip():
        return "an empty pattern matches nothing"
    if pattern.startswith("/"):
        return "patterns are relative to the source's folder: drop the leading /"
    if pattern.endswith("/"):
        return f'only files are matched: write "{pattern}**" for everything in a folder'
    for segment in pattern.split("/"):
        if problem := _segment_problem(segment):
            return problem
    try:
        compile_glob(pattern, ignore_case=False)
    except Exception as exc:  # wcmatch's limits raise a private class: name no more than this
        return f"not a usable pattern ({exc})"
    return None


def _segment_problem(segment: str) -> str | None:
    if not segment:
        return "empty path segment (//)"
    if segment in (".", ".."):
        return f'"{segment}" segments are not allowed: paths in the mirror have none'
    if "**" in segment and segment != "**":
        return '"**" must be a whole segment ("a/**/b"); "*" matches within a name'
    return _brackets_problem(segment)


def _brackets_problem(segment: str) -> str | None:
    """An unclosed `[` or an unbalanced `{`/`}` (escaped characters aside)."""
    depth, index = 0, 0
    while index < len(segment):
        char = segment[index]
        if char == "\\":
            index += 2
            continue
        if char == "[":
            close = segment.find("]", index + 2)  # `[]...]` holds a literal ]
            if close < 0:
                return 'unclosed "[" (write "[[]" to match a literal [)'
            index = close
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth < 0:
                return 'unbalanced "}" (write "[}]" to match a literal })'
        index += 1
    return 'unclosed "{" (write "[{]" to match a literal {)' if depth else None


@functools.lru_cache(maxsize=1024)
def compile_glob(pattern: str, *, ignore_case: bool) -> glob.WcMatcher[str]:
    """The compiled matcher of a checked pattern (`.match(path)`)."""
    flags = FLAGS | glob.IGNORECASE if ignore_case else FLAGS
    return glob.compile(pattern, flags=flags)
