"""Reads one TOML table into its declared class, turning every mistake into a named error.

The declarations (`agent/config/model.py`) say what each key takes; this module applies
them: the `Parse` parsers, the three ways of writing a `Secret`, then msgspec's strict type
check (required keys, unknown keys, constraints). msgspec reports a path such as
`$.max_concurrent_downloads`; it becomes `ConfigError("agent.max_concurrent_downloads",
"expected an integer, got '8'")`, the value shown as written (secrets are wrapped by then).
"""

from __future__ import annotations

import functools
import re
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import msgspec
from msgspec.structs import FieldInfo

from agent.config.secret import Secret, given_secret_key, read_secret, secret_keys
from agent.errors import ConfigError

T = TypeVar("T", bound=msgspec.Struct)
AT_RE = re.compile(r"^(?P<message>.*) - at `\$(?P<path>.*)`$", re.DOTALL)
SEGMENT_RE = re.compile(r"\.(\w+)|\[(\d+)\]")
MISSING_RE = re.compile(r"^Object missing required field `(\w+)`$")
UNKNOWN_RE = re.compile(r"^Object contains unknown field `(\w+)`$")
TYPE_RE = re.compile(r"^Expected `([\w |]+)`, got `\w+`$")
BOUND_RE = re.compile(r"^Expected `\w+` (>=|>|<=|<) (\S+)$")
TYPE_WORDS = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
    "array": "a list",
    "object": "a table",
}
BOUND_WORDS = {">": "greater than", ">=": "at least", "<": "less than", "<=": "at most"}
NOT_FOUND = object()


@dataclass(frozen=True)
class Parse:
    """Marks a key whose value as written goes through `parser(value, key)` first."""

    parser: Callable[[object, str], object]


@dataclass(frozen=True)
class Context:
    """What reading a table needs besides the table: the environment, whether secrets count."""

    env: Mapping[str, str]
    secrets: bool = True  # False: secrets that cannot be read stay unset (`status` needs none)


def read_table(cls: type[T], table: Mapping[str, object], prefix: str, ctx: Context) -> T:
    """`table` (the TOML table at `prefix`) as a `cls`; raises ConfigError naming the key."""
    return convert(cls, prepare(cls, table, prefix, ctx), prefix)


def prepare(
    cls: type[msgspec.Struct],
    table: Mapping[str, object],
    prefix: str,
    ctx: Context,
    required_secrets: tuple[str, ...] = (),
) -> dict[str, object]:
    """The table with its values parsed and its secrets read, ready for `convert`."""
    out = dict(table)
    for field in fields_of(cls).values():
        key = f"{prefix}.{field.name}"
        if takes_secret(field.type):
            for variant in secret_keys(field.name):
                out.pop(variant, None)
            required = field.required or field.name in required_secrets
            secret = _secret(table, field.name, prefix, ctx, required=required)
            if secret is not None or required:
                out[field.name] = secret
        elif field.name in table:
            out[field.name] = _parse(field.type, table[field.name], key, ctx)
    return out


def convert(cls: type[T], data: Mapping[str, object], prefix: str) -> T:
    """msgspec's strict conversion of prepared data, its error translated to a ConfigError."""
    try:
        return msgspec.convert(data, cls, strict=True, dec_hook=_already_built)
    except msgspec.ValidationError as exc:
        raise _named(exc, cls, data, prefix) from None


@functools.cache
def fields_of(cls: type[msgspec.Struct]) -> Mapping[str, FieldInfo]:
    """The declared keys of a table class (resolved once: resolving annotations is slow)."""
    return MappingProxyType({field.name: field for field in msgspec.structs.fields(cls)})


def file_keys(cls: type[msgspec.Struct]) -> set[str]:
    """Every key a table of `cls` may hold, with the `_file`/`_env` forms of its secrets."""
    keys: set[str] = set()
    for field in fields_of(cls).values():
        keys.update(secret_keys(field.name) if takes_secret(field.type) else (field.name,))
    return keys


def plain_type(annotation: Any) -> Any:
    """The type without `Annotated` metadata and without `None` (`X | None` is `X`)."""
    if get_origin(annotation) is Annotated:
        return plain_type(annotation.__origin__)
    if get_origin(annotation) in (Union, types.UnionType):
        options = [a for a in get_args(annotation) if a is not type(None)]
        return plain_type(options[0]) if len(options) == 1 else annotation
    return annotation


def takes_secret(annotation: Any) -> bool:
    return plain_type(annotation) is Secret


def nested_table(annotation: Any) -> type[msgspec.Struct] | None:
    """The class of a key that holds a table of its own (`[sources.user]`)."""
    kind = plain_type(annotation)
    return kind if isinstance(kind, type) and issubclass(kind, msgspec.Struct) else None


def _parsers(annotation: Any) -> Iterator[Parse]:
    if get_origin(annotation) is Annotated:
        yield from _parsers(annotation.__origin__)
        yield from (m for m in annotation.__metadata__ if isinstance(m, Parse))
    elif get_origin(annotation) in (Union, types.UnionType):
        for option in get_args(annotation):
            yield from _parsers(option)


def _parse(annotation: Any, value: object, key: str, ctx: Context) -> object:
    for parse in _parsers(annotation):
        value = parse.parser(value, key)
    table = nested_table(annotation)
    if table is not None and isinstance(value, dict):
        return prepare(table, value, key, ctx)
    return value


def _secret(
    table: Mapping[str, object], name: str, prefix: str, ctx: Context, *, required: bool
) -> Secret | None:
    key = given_secret_key(table, name, prefix)
    if key is None:
        if required and ctx.secrets:
            raise ConfigError(f"{prefix}.{name}", f"is required (or {name}_file / {name}_env)")
        return None
    try:
        return read_secret(table, key, prefix, ctx.env)
    except ConfigError:
        if ctx.secrets:
            raise
        return None


def _already_built(kind: type, value: object) -> object:
    """Values of types msgspec does not know (Path, Secret) come parsed; check and keep them."""
    if isinstance(value, kind):
        return value
    raise NotImplementedError


# ---------------------------------------------------------------- msgspec error -> ConfigError


def _named(
    exc: msgspec.ValidationError, cls: type, data: Mapping[str, object], prefix: str
) -> ConfigError:
    match = AT_RE.match(str(exc))
    message, path = (match["message"], match["path"]) if match else (str(exc), "")
    if found := MISSING_RE.match(message):
        is_table = nested_table(_type_at(cls, [*_segments(path), found[1]])) is not None
        return ConfigError(
            f"{prefix}{path}.{found[1]}", "is required (a table)" if is_table else "is required"
        )
    if found := UNKNOWN_RE.match(message):
        return ConfigError(f"{prefix}{path}.{found[1]}", "unknown key")
    segments = _segments(path)
    words = _words(message, _type_at(cls, segments))
    value = _value_at(data, segments)
    return ConfigError(
        f"{prefix}{path}", words if value is NOT_FOUND else f"{words}, got {value!r}"
    )


def _segments(path: str) -> list[str | int]:
    """`.user.first_name` or `[0]` as ["user", "first_name"] or [0]."""
    return [name or int(index) for name, index in SEGMENT_RE.findall(path)]


def _words(message: str, annotation: Any) -> str:
    if found := TYPE_RE.match(message):
        kinds = [TYPE_WORDS.get(k, k) for k in found[1].split(" | ") if k != "null"]
        return "expected " + " or ".join(kinds)
    if found := BOUND_RE.match(message):
        return f"must be {BOUND_WORDS[found[1]]} {found[2]}"
    if message.startswith("Expected `str` of length >= 1"):
        return "must not be empty"
    if message.startswith("Invalid enum value") and get_origin(annotation) is Literal:
        *first, last = (str(choice) for choice in get_args(annotation))
        return f"must be {', '.join(first)} or {last}" if first else f"must be {last}"
    return message[:1].lower() + message[1:]


def _type_at(cls: type, segments: list[str | int]) -> Any:
    annotation: Any = cls
    for segment in segments:
        kind = plain_type(annotation)
        if isinstance(segment, int):
            annotation = get_args(kind)[0] if get_args(kind) else None
        elif isinstance(kind, type) and issubclass(kind, msgspec.Struct):
            field = fields_of(kind).get(segment)
            annotation = None if field is None else field.type
        else:
            return None
    return plain_type(annotation)


def _value_at(data: object, segments: list[str | int]) -> object:
    for segment in segments:
        found = isinstance(data, Mapping) and segment in data
        found |= isinstance(data, list) and isinstance(segment, int) and segment < len(data)
        if not found:
            return NOT_FOUND
        data = data[segment]  # type: ignore[index]
    return data
