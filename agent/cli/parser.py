"""The `sync-agent` argument parser: every command and option, and the completion scripts
generated from it (shtab, imported only for them)."""

from __future__ import annotations

import argparse
from typing import Any

from agent import __version__
from agent.config import SOURCE_TYPES

COMPLETION_SHELLS = ("bash", "zsh", "fish")
FILE_OPTIONS = (("", "--config"), ("init", "--output"), ("get", "--output"))  # (command, option)


def build_parser(*, for_completion: bool = False) -> argparse.ArgumentParser:
    """The parser; `for_completion` also marks the options that take a file name, for the
    scripts shtab generates (shtab is imported only then: 45 ms of every start here)."""
    parser = argparse.ArgumentParser(
        prog="sync-agent",
        description="Keeps an offline mirror of documents from remote document APIs.",
    )
    parser.add_argument("--version", action="version", version=f"sync-agent {__version__}")
    parser.add_argument("--config", "-c", help="configuration file (default: $SYNC_AGENT_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="run the daemon: poll every source on its schedule")
    sync = sub.add_parser("sync", help="one pass over the sources, then exit")
    sync.add_argument("--source", action="append", help="only this source (repeatable)")
    for command in (sync, run):
        add_dry_run_arguments(command)
    status = sub.add_parser("status", help="what the mirror holds, per source")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_parser("check-config", help="validate the configuration without touching the network")
    demo = sub.add_parser(
        "demo", help="mirror a local sandbox API: see the agent work, no account needed"
    )
    demo.add_argument(
        "folder", nargs="?", default="demo-mirror", help="mirror folder (default ./demo-mirror)"
    )
    demo.add_argument(
        "--documents", type=int, default=24, help="documents per sandbox API (default 24)"
    )
    demo.add_argument(
        "--serve",
        action="store_true",
        help="only serve the sandboxes on loopback and print a configuration for them",
    )
    login = sub.add_parser("login", help="sign in to an OpenCDE source in the browser")
    login.add_argument("name", help="source name")
    select = sub.add_parser("select", help="pick OpenCDE documents to mirror in the browser")
    select.add_argument("name", help="source name")
    select.add_argument("--list", action="store_true", help="show the selected documents")
    select.add_argument("--remove", metavar="ID", help="stop mirroring this document id")
    for sp in (login, select):
        sp.add_argument(
            "--timeout", type=float, default=300.0, help="seconds to wait for the browser"
        )
    add_init_parser(sub)
    add_events_parsers(sub)
    add_verify_parser(sub)
    completion = sub.add_parser("completion", help="print a shell completion script")
    completion.add_argument("shell", choices=COMPLETION_SHELLS, help="the shell to complete for")
    if for_completion:
        _complete_files(parser)
    return parser


def _complete_files(parser: argparse.ArgumentParser) -> None:
    """Tell shtab which options take a file name (`FILE_OPTIONS`)."""
    import shtab  # noqa: PLC0415 - only the completion command needs it

    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command, option in FILE_OPTIONS:
        owner = commands.choices[command] if command else parser
        action: Any = next(a for a in owner._actions if option in a.option_strings)
        action.complete = shtab.FILE


def add_dry_run_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--dry-run",
        "-n",
        action="store_true",
        help=(
            "list what one pass would download, move, delete or keep aside, with sizes and a "
            "total, and change nothing in the mirror or the state database (tokens a source "
            "obtains or refreshes meanwhile are still saved, so a rotated one is never lost)"
        ),
    )
    command.add_argument(
        "--json", action="store_true", help="with --dry-run: one JSON document on stdout"
    )


def add_init_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    init = sub.add_parser(
        "init",
        help="write a commented starting configuration, then check it",
        description=(
            "Write a commented configuration for the chosen source types and run check-config "
            "on it. On a terminal, the essentials not given as options are asked for (secrets "
            "without echo, stored in 0600 files beside the configuration); otherwise they "
            "become example values and secrets *_env references. Options that take "
            "[TYPE=]VALUE apply to every source, or to one type with TYPE=. Exit status: 0 "
            "the file passes check-config, 78 it was written but check-config refuses it "
            "(the message says why), 73 the file exists and --force was not given."
        ),
    )
    init.add_argument(
        "--type", action="append", choices=SOURCE_TYPES, help="a source type (repeatable)"
    )
    init.add_argument(
        "--output", "-o", help="where to write (default: --config, else ./sync-agent.toml)"
    )
    init.add_argument("--force", action="store_true", help="replace an existing file")
    init.add_argument("--mirror-dir", metavar="DIR", help="the mirror folder")
    for option, what in (("--name", "source name"), ("--client-id", "OAuth client id")):
        init.add_argument(option, action="append", default=[], metavar="[TYPE=]VALUE", help=what)
    init.add_argument(
        "--base-url",
        action="append",
        default=[],
        metavar="[TYPE=]URL",
        help="API base URL (index-health, opencde)",
    )
    init.add_argument(
        "--workspace", action="append", default=[], metavar="ID", help="Huddle workspace id"
    )
    init.add_argument("--user-name", metavar="'FIRST LAST'", help="Index Health: who you are")
    init.add_argument("--user-email", metavar="EMAIL", help="Index Health: your e-mail")


def add_events_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    events = sub.add_parser(
        "events",
        help="print the change journal: what was added, updated, moved, removed or failed",
        description=(
            "Print the change journal from the state database (no daemon needed): human "
            "lines on a terminal, JSON lines otherwise or with --json."
        ),
    )
    events.add_argument(
        "--since", type=int, default=0, metavar="SEQ", help="only entries after this seq"
    )
    events.add_argument("--follow", "-f", action="store_true", help="wait for new entries")
    events.add_argument("--json", action="store_true", help="one JSON object per line")
    get = sub.add_parser(
        "get",
        help="download one document now, outside the schedule",
        description=(
            "Download one document into the mirror now (through the running daemon if there "
            "is one), recorded in the change journal. --output also writes a copy there. A "
            "document the source's filters (include, exclude, min_size, max_size) leave out "
            "is refused with the rule that leaves it out (exit 1): get fetches only what a "
            "pass would mirror."
        ),
    )
    get.add_argument("source", help="source name")
    get.add_argument("document_id", help="the document's id in the source")
    get.add_argument(
        "--reason",
        default="open-file-other-app",
        help="Huddle's x-download-reason (default open-file-other-app)",
    )
    get.add_argument(
        "--output", "-o", metavar="PATH", help="also copy the file here (a folder or a file)"
    )


def add_verify_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    verify = sub.add_parser(
        "verify",
        help="check the mirror against the state (exit 0 clean, 1 otherwise)",
        description=(
            "Walk the mirror against the state: files missing, changed or unknown, and stale "
            "staging files. --repair marks missing and changed files for download on the next "
            "pass (a changed file is then kept beside as a local copy), adopts unknown files "
            "identical to a missing one and deletes stale staging files; on a PostgreSQL "
            "state it is refused while any replica runs. Exit status: 0 the mirror was clean, "
            "1 it was not (whether or not it was repaired), 75 another instance runs."
        ),
    )
    verify.add_argument("--source", action="append", help="only this source (repeatable)")
    verify.add_argument("--repair", action="store_true", help="repair what can be repaired")
    verify.add_argument("--json", action="store_true", help="machine-readable output")
