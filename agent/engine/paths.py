"""Turns untrusted remote names into safe, stable mirror paths (pure functions)."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence

MAX_NAME_BYTES = 200  # well under 255, leaving room for a disambiguation suffix
MAX_EXT_CHARS = 16
UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\]")
WINDOWS_UNSAFE = re.compile(r'[<>:"|?*]')
# Words of letters, digits, `_` and `-` joined by single dots or spaces, not starting with
# a reserved stem: a name `_sanitize` leaves alone, told by one C call (a re-poll asks for
# a million paths). `PLAIN_LINES`: such names, one a line (a window's names at once).
_WORDS = r"[a-z0-9_-]+(?:[ .][a-z0-9_-]+)*"
_STEMS = r"(?:con|prn|aux|nul|com[0-9]|lpt[0-9])"
PLAIN = re.compile(rf"(?!{_STEMS}(?:\.|$)){_WORDS}", re.ASCII | re.IGNORECASE)
_LINE = rf"(?!{_STEMS}(?:[.\n]|\Z)){_WORDS}"
PLAIN_LINES = re.compile(rf"{_LINE}(?:\n{_LINE})*", re.ASCII | re.IGNORECASE)
RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL"} | {f"COM{i}" for i in range(10)} | {f"LPT{i}" for i in range(10)}
)


def split_ext(name: str) -> tuple[str, str]:
    """("report", ".pdf") for "report.pdf"; no extension for dotfiles or odd suffixes."""
    dot = name.rfind(".")
    if dot <= 0:
        return name, ""
    ext = name[dot:]
    if len(ext) > MAX_EXT_CHARS or " " in ext or len(ext) == 1:
        return name, ""
    return name[:dot], ext


def truncate_utf8(text: str, max_bytes: int) -> str:
    """The longest prefix of `text` whose UTF-8 encoding fits in `max_bytes`."""
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text
    return encoded[:max_bytes].decode("utf-8", errors="ignore")


def sanitize_component(name: str) -> str:
    """One safe path component: no separators, control characters, traversal or reserved names."""
    if len(name) <= MAX_NAME_BYTES and PLAIN.fullmatch(name) is not None:
        return name  # the plainest names: one regular expression
    if _already_safe(name):
        return name  # most names: what `_sanitize` would return unchanged, at a tenth the cost
    return _sanitize(name)


def plain_names(names: Sequence[str]) -> bool:
    """Does every one of `names` match `PLAIN` (so `sanitize_component` returns each as it
    is; a few names it also leaves alone, such as "report (1).pdf", answer False)? One
    regular expression over them all, a line each: half the cost of one call a name."""
    lines = "\n".join(names)
    return not names or (
        lines.count("\n") == len(names) - 1  # no name holds a line break of its own
        and max(map(len, names)) <= MAX_NAME_BYTES
        and PLAIN_LINES.fullmatch(lines) is not None
    )


def _already_safe(name: str) -> bool:
    """Is `name` a component `_sanitize` leaves as it is? (Printable ASCII, none of the
    characters it replaces, nothing it strips, short, not reserved.)"""
    return (
        0 < len(name) <= MAX_NAME_BYTES
        and name.isascii()
        and name.isprintable()
        and name[0] not in " ."
        and name[-1] not in " ."
        and ".." not in name
        and " ." not in name
        and WINDOWS_UNSAFE.search(name) is None
        and "/" not in name
        and "\\" not in name
        and name.split(".", maxsplit=1)[0].upper() not in RESERVED
    )


def _sanitize(name: str) -> str:
    text = unicodedata.normalize("NFC", name)
    text = UNSAFE.sub("_", text)
    text = WINDOWS_UNSAFE.sub("_", text)
    text = text.strip().rstrip(". ")
    if not text or set(text) <= {"."}:
        text = "_"
    stem, ext = split_ext(text)
    if stem.split(".")[0].upper() in RESERVED:
        stem = f"_{stem}"
    ext = truncate_utf8(ext, 32)
    stem = truncate_utf8(stem, MAX_NAME_BYTES - len(ext.encode())).rstrip(". ") or "_"
    return stem + ext


def with_suffix(name: str, suffix: str) -> str:
    """`name` with ` suffix` inserted before its extension ("a.pdf" -> "a (v2).pdf")."""
    stem, ext = split_ext(name)
    return f"{stem} {suffix}{ext}"


def disambiguate(name: str, remote_id: str) -> str:
    """A stable distinct name for the second and later documents that want the same name."""
    tag = hashlib.sha256(remote_id.encode()).hexdigest()[:8]
    return with_suffix(name, f"(~{tag})")


def mirror_path(source: str, folder: Sequence[str], name: str) -> str:
    """The relative POSIX path of a document: <source>/<folder...>/<name>, all sanitised."""
    if not folder:
        return f"{source}/{sanitize_component(name)}"
    parts = [source, *(sanitize_component(f) for f in folder), sanitize_component(name)]
    return "/".join(parts)
