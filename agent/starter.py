"""`sync-agent init`: gathers a first configuration's essentials and writes the file once.

Answers come from flags; on a terminal the essentials not given are asked for (secrets
with echo off, stored in 0600 files beside the configuration). Off a terminal a missing
essential becomes a visible placeholder and a secret an `*_env` reference. An existing
file is never replaced without `force`.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from agent.config import SOURCE_TYPES
from agent.config.values import NAME_RE
from agent.errors import AgentError
from agent.templates import (
    DEFAULT_NAMES,
    PLACEHOLDER_CLIENT_ID,
    SECRET_KEYS,
    SecretRef,
    SourceAnswers,
    env_name,
    render,
    shell_word,
)

DEFAULT_MIRROR = "~/sync-agent-mirror"
EX_CANTCREAT = 73  # sysexits.h: the output file exists or cannot be created
EXIT_USAGE = 2  # as argparse: the options do not make sense


class InitError(AgentError):
    """init cannot go on: `code` is the exit status, the message says why and what to do."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class Prompter(Protocol):
    """Asks the user; a script has none (every answer is then the default)."""

    def ask(self, question: str, default: str | None = None) -> str: ...

    def secret(self, question: str) -> str: ...

    def say(self, text: str) -> None: ...


class TerminalPrompter:
    """Questions on the terminal; secrets through getpass, so they are never echoed."""

    def __init__(self, read: Callable[[str], str] = input) -> None:
        self._read = read

    def ask(self, question: str, default: str | None = None) -> str:
        shown = f"{question} [{default}]: " if default else f"{question}: "
        while True:
            answer = self._read(shown).strip()
            if answer or default is not None:
                return answer or (default or "")
            print("  an answer is needed")

    def secret(self, question: str) -> str:
        return getpass.getpass(f"{question}: ").strip()

    def say(self, text: str) -> None:
        print(text)


@dataclass(frozen=True)
class InitRequest:
    """What the command line said. Per-type values are keyed by type, or `*` for all."""

    output: Path
    types: tuple[str, ...] = ()
    force: bool = False
    mirror_dir: str | None = None
    names: Mapping[str, str] = field(default_factory=dict)
    client_ids: Mapping[str, str] = field(default_factory=dict)
    base_urls: Mapping[str, str] = field(default_factory=dict)
    workspaces: tuple[str, ...] = ()
    user_name: str | None = None
    user_email: str | None = None


@dataclass
class InitResult:
    """What was decided and written, and what the user still has to do."""

    path: Path
    mirror_dir: str
    sources: list[SourceAnswers] = field(default_factory=list)
    placeholders: list[str] = field(default_factory=list)  # keys left at an example value
    env_secrets: list[str] = field(default_factory=list)  # variables to export
    secrets: dict[Path, str] = field(default_factory=dict, repr=False)  # files to write

    def text(self) -> str:
        return render(str(self.path), self.mirror_dir, self.sources)


def split_typed(values: Sequence[str], option: str) -> dict[str, str]:
    """`[TYPE=]VALUE` flags into {type or "*": value}; `=` after a non-type is the value's."""
    found: dict[str, str] = {}
    for raw in values:
        head, sep, tail = raw.partition("=")
        key, value = (head, tail) if sep and head in SOURCE_TYPES else ("*", raw)
        if not value:
            raise InitError(f"{option}: empty value in {raw!r}", EXIT_USAGE)
        found[key] = value
    return found


def refuse_existing(path: Path, force: bool) -> None:
    """Stop before any question when the file exists and may not be replaced."""
    if path.exists() and not force:
        raise InitError(
            f"{path} already exists; nothing was changed (use --force to replace it)",
            EX_CANTCREAT,
        )


def gather(request: InitRequest, prompter: Prompter | None) -> InitResult:
    """Decide every answer: flags first, then questions on a terminal, then placeholders."""
    types = _types(request, prompter)
    mirror = request.mirror_dir or _ask(prompter, "Mirror folder", DEFAULT_MIRROR)
    result = InitResult(request.output, mirror)
    for kind in types:
        result.sources.append(_Source(request, prompter, result, kind).answers())
    return result


def _ask(prompter: Prompter | None, question: str, default: str) -> str:
    return prompter.ask(question, default) if prompter else default


def _types(request: InitRequest, prompter: Prompter | None) -> tuple[str, ...]:
    if request.types:
        return tuple(dict.fromkeys(request.types))
    if prompter is None:
        raise InitError(
            f"give --type (one of {', '.join(SOURCE_TYPES)}), or run on a terminal", EXIT_USAGE
        )
    while True:
        answer = prompter.ask(f"Source types, comma-separated ({', '.join(SOURCE_TYPES)})")
        chosen = [t.strip() for t in answer.split(",") if t.strip()]
        unknown = [t for t in chosen if t not in SOURCE_TYPES]
        if chosen and not unknown:
            return tuple(dict.fromkeys(chosen))
        prompter.say(f"  unknown type: {', '.join(unknown) or '(none given)'}")


class _Source:
    """The questions for one source, in the order a person would answer them."""

    def __init__(
        self, request: InitRequest, prompter: Prompter | None, result: InitResult, kind: str
    ) -> None:
        self.request = request
        self.prompter = prompter
        self.result = result
        self.kind = kind
        self.name = DEFAULT_NAMES[kind]

    def answers(self) -> SourceAnswers:
        self.name = self._name()
        client_id = self._value(self.request.client_ids, f"{self.kind} client id", "client_id")
        values = self._extra()
        secret = self._secret()
        return SourceAnswers(
            self.kind, self.name, client_id or PLACEHOLDER_CLIENT_ID, secret, values
        )

    def _flag(self, flags: Mapping[str, str]) -> str | None:
        return flags.get(self.kind) or flags.get("*")

    def _name(self) -> str:
        taken = {s.name for s in self.result.sources}
        name = self._flag(self.request.names)
        default = DEFAULT_NAMES[self.kind]
        while True:
            name = name or _ask(self.prompter, f"Name of the {self.kind} source", default)
            problem = _name_problem(name, taken)
            if problem is None:
                return name
            if self.prompter is None:
                raise InitError(f"--name: {problem}", EXIT_USAGE)
            self.prompter.say(f"  {problem}")
            name = None

    def _value(self, flags: Mapping[str, str], question: str, key: str) -> str | None:
        """A flag, else the answer to `question`; None (a placeholder) off a terminal."""
        given = self._flag(flags)
        if given:
            return given
        if self.prompter is not None:
            return self.prompter.ask(question)
        self.result.placeholders.append(f"sources.{self.name}.{key}")
        return None

    def _extra(self) -> dict[str, object]:
        values: dict[str, object] = {}
        if self.kind in ("index-health", "opencde"):
            url = self._value(self.request.base_urls, f"{self.kind} API base URL", "base_url")
            if url:
                values["base_url"] = url
        if self.kind == "huddle":
            values |= self._workspaces()
        if self.kind == "index-health":
            values |= self._user()
        return values

    def _workspaces(self) -> dict[str, object]:
        ids = list(self.request.workspaces)
        if not ids:
            answer = self._value({}, "Huddle workspace ids, comma-separated", "workspaces")
            ids = [w.strip() for w in (answer or "").split(",") if w.strip()]
        return {"workspaces": ids} if ids else {}

    def _user(self) -> dict[str, object]:
        full = self.request.user_name or self._value(
            {}, "Your first and last name", "user.first_name"
        )
        email = self.request.user_email or self._value({}, "Your e-mail address", "user.email")
        values: dict[str, object] = {"email": email} if email else {}
        if full:
            first, _, last = full.strip().rpartition(" ")
            values |= {"first_name": first or last, "last_name": last}
        return values

    def _secret(self) -> SecretRef:
        key = SECRET_KEYS[self.kind]
        variable = env_name(self.name, key)
        if self.prompter is not None:
            what = key.replace("_", " ")
            value = self.prompter.secret(
                f"{self.kind} {what} (not shown; leave empty to give it later as ${variable})"
            )
            if value:
                path = self.result.path.parent / "secrets" / f"{self.name}.{key}"
                self.result.secrets[path] = value
                return SecretRef("file", str(path.absolute()))
        self.result.env_secrets.append(variable)
        return SecretRef("env", variable)


def _name_problem(name: str, taken: set[str]) -> str | None:
    if not NAME_RE.match(name):
        return f"{name!r}: use 1-64 letters, digits, '-' or '_'"
    if name in taken:
        return f"{name!r} is already the name of another source"
    return None


# ---------------------------------------------------------------- writing


def write(result: InitResult, force: bool) -> None:
    """Write the secrets (0600) and then the configuration, each never over a file unless
    `force`; a file is created whole or not at all."""
    for path, value in result.secrets.items():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_new(path, value + "\n", force, mode=0o600)
    result.path.parent.mkdir(parents=True, exist_ok=True)
    _write_new(result.path, result.text(), force, mode=0o644)


def _write_new(path: Path, text: str, force: bool, *, mode: int) -> None:
    try:
        if force:
            _replace(path, text, mode)
        else:
            _create(path, text, mode)
    except FileExistsError as exc:
        raise InitError(
            f"{path} already exists; nothing was changed (use --force to replace it)",
            EX_CANTCREAT,
        ) from exc
    except OSError as exc:
        raise InitError(f"cannot write {path}: {exc.strerror}", EX_CANTCREAT) from exc


def _create(path: Path, text: str, mode: int) -> None:
    """O_EXCL: an existing file (even one that appeared after the first check) is kept."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        _fill(fd, text)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _replace(path: Path, text: str, mode: int) -> None:
    """A temporary beside `path`, renamed over it: the old file stays whole until then."""
    temp = path.with_name(f".{path.name}.init-{os.getpid()}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        _fill(fd, text)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def _fill(fd: int, text: str) -> None:
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


# ---------------------------------------------------------------- what next


def next_steps(result: InitResult, checked: bool) -> list[str]:
    """The commands to run next, in order, for the file just written."""
    config = f"sync-agent --config {shell_word(str(result.path))}"
    steps = []
    if result.placeholders:
        keys = ", ".join(result.placeholders)
        steps.append(f"edit these example values: {keys}")
    if result.env_secrets:
        names = ", ".join(f"${name}" for name in result.env_secrets)
        steps.append(f"provide the secrets in the environment: {names} (or use *_file keys)")
    if steps or not checked:
        steps.append(f"{config} check-config")
    steps += [
        f"{config} login {s.name}   # then: select {s.name}"
        for s in result.sources
        if s.type == "opencde"
    ]
    steps += [
        f"{config} sync --dry-run   # what would be mirrored",
        f"{config} sync             # mirror once",
        f"{config} run              # or keep it in step (systemd/ has a unit)",
    ]
    return steps
