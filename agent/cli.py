"""The `sync-agent` command line: parses arguments, maps outcomes to exit codes."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import webbrowser
from collections.abc import Mapping, Sequence
from pathlib import Path

import shtab

from agent import __version__, starter
from agent.agent import Agent, PassOutcome, acquire_lock
from agent.config import SOURCE_TYPES, Config, load_config
from agent.config.values import parse_download_reason
from agent.errors import (
    EXIT_AUTH,
    EXIT_CONFIG,
    EXIT_FAILURES,
    EXIT_OK,
    EXIT_STATE,
    AgentError,
    AlreadyRunningError,
    AuthenticationError,
    ConfigError,
    MirrorError,
    StateError,
)
from agent.events.webhooks import deliver_due
from agent.log import configure_logging
from agent.models import PassStats
from agent.state.store import Store

EXIT_USAGE = 2  # as argparse exits for a usage mistake
EXIT_RUNNING = 75  # EX_TEMPFAIL: another instance holds the state folder
COMPLETION_SHELLS = ("bash", "zsh", "fish")
DEFAULT_INIT_OUTPUT = "sync-agent.toml"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sync-agent",
        description="Keeps an offline mirror of documents from remote document APIs.",
    )
    parser.add_argument("--version", action="version", version=f"sync-agent {__version__}")
    parser.add_argument(  # type: ignore[attr-defined]
        "--config", "-c", help="configuration file (default: $SYNC_AGENT_CONFIG)"
    ).complete = shtab.FILE
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
    return parser


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
    init.add_argument(  # type: ignore[attr-defined]
        "--output", "-o", help="where to write (default: --config, else ./sync-agent.toml)"
    ).complete = shtab.FILE
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
    get.add_argument(  # type: ignore[attr-defined]
        "--output", "-o", metavar="PATH", help="also copy the file here (a folder or a file)"
    ).complete = shtab.FILE


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


def config_path(args: argparse.Namespace) -> Path:
    value = args.config or os.environ.get("SYNC_AGENT_CONFIG")
    if not value:
        raise ConfigError(
            "--config", "no configuration given (use --config PATH or SYNC_AGENT_CONFIG)"
        )
    return Path(value)


def load(args: argparse.Namespace, *, secrets: bool = True) -> Config:
    config = load_config(config_path(args), secrets=secrets)
    configure_logging(config.agent.log_level, config.agent.log_format)
    return config


def sync_exit_code(results: Mapping[str, PassOutcome]) -> int:
    """0 all mirrored, 1 some failed, 74 the state database failed, 77 credentials rejected
    (pure)."""
    if any(isinstance(r, StateError) for r in results.values()):
        return EXIT_STATE
    if any(isinstance(r, AuthenticationError) for r in results.values()):
        return EXIT_AUTH
    if any(isinstance(r, BaseException) or r.failed for r in results.values()):
        return EXIT_FAILURES
    return EXIT_OK


async def cmd_sync(args: argparse.Namespace) -> int:
    config = load(args)
    names = args.source or None
    for name in names or ():
        config.source(name)
    if args.dry_run or args.json:
        return await cmd_dry_run(args, config, names)
    if sys.stderr.isatty():
        from agent.progress import terminal_progress  # noqa: PLC0415 - rich only on a terminal

        with terminal_progress(sys.stderr) as progress:
            async with Agent.open(config, progress=progress) as agent:
                results = await agent.sync_once(names)
                await deliver_due(agent.store, config.webhooks)
    else:
        async with Agent.open(config) as agent:
            results = await agent.sync_once(names)
            await deliver_due(agent.store, config.webhooks)
    print_summary(results)
    return sync_exit_code(results)


def print_summary(results: Mapping[str, PassOutcome]) -> None:
    for name, result in results.items():
        if isinstance(result, PassStats):
            adopted = f", {result.adopted} adopted" if result.adopted else ""
            print(
                f"{name}: {result.listed} listed, {result.downloaded} downloaded{adopted}, "
                f"{result.moved} moved, {result.skipped} skipped, {result.removed} removed, "
                f"{result.failed} failed"
            )
            for warning in result.warnings:
                print(f"sync-agent: warning: {name}: {warning}", file=sys.stderr)
        else:
            message = str(result)  # source errors usually name their source already
            prefix = "" if message.startswith(f"{name}:") else f"{name}: "
            print(f"{prefix}{message}", file=sys.stderr)


async def cmd_status(args: argparse.Namespace) -> int:
    from agent.web import status_report  # noqa: PLC0415 - aiohttp.web only for status

    config = load(args, secrets=False)  # status reads the state only: no secret needed
    async with Store.open(config.agent.state_url, config.agent.state_dir) as store:
        status = await status_report(store, [s.name for s in config.sources])
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        from agent.progress import print_status  # noqa: PLC0415 - rich is only needed here

        print_status(status)
    return EXIT_OK


async def cmd_verify(args: argparse.Namespace) -> int:
    from agent.engine.verify import iter_lines, repairing, verify  # noqa: PLC0415
    from agent.progress import verify_progress  # noqa: PLC0415 - rich only here
    from agent.state.replica import current  # noqa: PLC0415
    from agent.transfer.mirrorfs import MirrorFS  # noqa: PLC0415

    config = load(args, secrets=False)  # the state and the disk only: no secret needed
    names = args.source or [s.name for s in config.sources]
    for name in names:
        config.source(name)
    fs = MirrorFS(config.agent.mirror_dir)
    with contextlib.ExitStack() as held:
        if args.repair:  # no pass may run while the state and the mirror are repaired
            held.callback(acquire_lock(config.agent.state_dir).close)
        tally = held.enter_context(verify_progress(sys.stderr))
        async with contextlib.AsyncExitStack() as state:
            store = await state.enter_async_context(
                Store.open(config.agent.state_url, config.agent.state_dir)
            )
            if args.repair:  # and on a shared database, no replica either
                await state.enter_async_context(repairing(store, names, str(current())))
            report = await verify(store, fs, names, repair=args.repair, tally=tally)
    if args.json:
        print(json.dumps(report.as_json(), indent=2))
    else:
        for line in iter_lines(report):
            print(line)
    return EXIT_OK if report.clean else EXIT_FAILURES


def cmd_check_config(args: argparse.Namespace) -> int:
    config = load_config(config_path(args))
    names = ", ".join(f"{s.name} ({s.type})" for s in config.sources) or "no sources"
    print(f"configuration OK: {names}")
    for override in config.overrides:  # secrets show as ***
        print(f"  {override.key} = {override.shown}  (from {override.variable})")
    if warning := open_listen_warning(config):
        print(f"sync-agent: warning: {warning}", file=sys.stderr)
    return EXIT_OK


def open_listen_warning(config: Config) -> str | None:
    """Why the API answers nothing but probes, when it listens off loopback without a token."""
    from agent.web import Access, mutation_access  # noqa: PLC0415 - aiohttp.web only here

    agent = config.agent
    token = agent.api_token.reveal() if agent.api_token is not None else None
    if mutation_access(agent.listen, token) is not Access.REFUSED:
        return None
    return (
        f"agent.listen = {agent.listen} is reachable from the network and no agent.api_token "
        "is set: /status, /events and the POST routes refuse every request there (only "
        "/healthz, /readyz and /metrics answer); set api_token (or api_token_file / "
        "api_token_env), or listen on 127.0.0.1"
    )


async def cmd_run(args: argparse.Namespace) -> int:
    from agent.daemon import run_daemon  # noqa: PLC0415 - keeps `sync` start-up light

    path = config_path(args)
    config = load(args)
    if args.dry_run or args.json:  # one cycle: every enabled source once
        return await cmd_dry_run(args, config, None)
    return await run_daemon(config, path)


async def cmd_dry_run(args: argparse.Namespace, config: Config, names: list[str] | None) -> int:
    """`--dry-run`: what a pass would do (`agent.preview`); the exit status a pass would have
    for sources that could not be surveyed."""
    from agent.preview import dry_run, preview_json, print_preview  # noqa: PLC0415

    if not args.dry_run:
        print("sync-agent: --json goes with --dry-run", file=sys.stderr)
        return EXIT_USAGE
    outcomes = await dry_run(config, names)
    if args.json:
        print(json.dumps(preview_json(outcomes, config), indent=2))
    else:
        print_preview(outcomes)
    return sync_exit_code(
        {n: o if isinstance(o, BaseException) else PassStats() for n, o in outcomes.items()}
    )


async def cmd_events(args: argparse.Namespace) -> int:
    from agent.changes import print_events  # noqa: PLC0415 - only for this command

    config = load(args, secrets=False)  # reads the state only
    as_json = args.json or not sys.stdout.isatty()
    await print_events(config, args.since, follow=args.follow, as_json=as_json)
    return EXIT_OK


async def cmd_get(args: argparse.Namespace) -> int:
    from agent.changes import copy_out, get_document  # noqa: PLC0415 - only for this command

    config = load(args)
    reason = parse_download_reason(args.reason, "--reason")
    fetched = await get_document(config, args.source, args.document_id, reason)
    where = config.agent.mirror_dir / fetched.rel_path
    if args.output:
        output = Path(args.output)
        where = await asyncio.to_thread(copy_out, config.agent.mirror_dir, fetched, output)
    print(f"{fetched.source}: {fetched.rel_path} ({fetched.size} bytes) -> {where}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from agent.demo import run_demo, serve_demo  # noqa: PLC0415 - only the demo needs sandboxes

    configure_logging("warning", "auto")
    demo = serve_demo if args.serve else run_demo
    return asyncio.run(demo(Path(args.folder).absolute(), documents=args.documents))


async def cmd_login(args: argparse.Namespace) -> int:
    from agent.sources.opencde_flows import login  # noqa: PLC0415 - only for OpenCDE

    config = load(args)
    async with _opencde_context(config, args.name) as ctx:
        await login(ctx, listen=config.agent.listen, open_url=webbrowser.open, timeout=args.timeout)
    print(f"{args.name}: signed in; tokens stored in the state database")
    return EXIT_OK


async def cmd_select(args: argparse.Namespace) -> int:
    from agent.sources import opencde_flows as flows  # noqa: PLC0415 - only for OpenCDE

    config = load(args)
    async with _opencde_context(config, args.name) as ctx:
        if args.remove:
            removed = await flows.remove_selection(ctx, args.remove)
            print(f"{args.name}: {'removed' if removed else 'not selected:'} {args.remove}")
            return EXIT_OK if removed else EXIT_FAILURES
        if not args.list:
            await flows.select(
                ctx, listen=config.agent.listen, open_url=webbrowser.open, timeout=args.timeout
            )
        for item in await flows.list_selection(ctx):
            print(f"{item.document_id}\t{item.title}")
    return EXIT_OK


def cmd_init(args: argparse.Namespace) -> int:
    try:
        request = _init_request(args)
        starter.refuse_existing(request.output, request.force)
        prompter = starter.TerminalPrompter() if sys.stdin.isatty() else None
        result = starter.gather(request, prompter)
        starter.write(result, request.force)
    except starter.InitError as exc:
        print(f"sync-agent: init: {exc}", file=sys.stderr)
        return exc.code
    except EOFError:
        print("\nsync-agent: init: cancelled; nothing was written", file=sys.stderr)
        return EXIT_FAILURES
    print(f"wrote {result.path}")
    code = _check_written(result.path)
    print("next steps:")
    for number, step in enumerate(starter.next_steps(result, code == EXIT_OK), 1):
        print(f"  {number}. {step}")
    return code


def _init_request(args: argparse.Namespace) -> starter.InitRequest:
    output = args.output or args.config or os.environ.get("SYNC_AGENT_CONFIG")
    return starter.InitRequest(
        output=Path(output or DEFAULT_INIT_OUTPUT).expanduser().absolute(),
        types=tuple(args.type or ()),
        force=args.force,
        mirror_dir=args.mirror_dir,
        names=starter.split_typed(args.name, "--name"),
        client_ids=starter.split_typed(args.client_id, "--client-id"),
        base_urls=starter.split_typed(args.base_url, "--base-url"),
        workspaces=tuple(args.workspace),
        user_name=args.user_name,
        user_email=args.user_email,
    )


def _check_written(path: Path) -> int:
    """`check-config` on the file init wrote: its exit status, its message printed."""
    try:
        return cmd_check_config(argparse.Namespace(config=str(path)))
    except ConfigError as exc:
        print(f"sync-agent: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG


def cmd_completion(args: argparse.Namespace) -> int:
    print(shtab.complete(build_parser(), shell=args.shell), end="")
    return EXIT_OK


def _opencde_context(config: Config, name: str):  # type: ignore[no-untyped-def]
    from agent.sources.context import source_context  # noqa: PLC0415

    source = config.source(name)
    if source.type != "opencde":
        raise ConfigError(f"sources.{name}.type", "login and select are for opencde sources")
    return source_context(config, source)


COMMANDS = {
    "sync": cmd_sync,
    "status": cmd_status,
    "run": cmd_run,
    "login": cmd_login,
    "select": cmd_select,
    "events": cmd_events,
    "get": cmd_get,
    "verify": cmd_verify,
}

SYNC_COMMANDS = {  # plain functions: no event loop
    "init": cmd_init,
    "completion": cmd_completion,
}


ERROR_EXITS: tuple[tuple[type[AgentError], str, int], ...] = (
    (ConfigError, "configuration error: ", EXIT_CONFIG),
    (AuthenticationError, "authentication failed: ", EXIT_AUTH),
    (AlreadyRunningError, "", EXIT_RUNNING),
    (StateError, "", EXIT_STATE),
    (MirrorError, "", EXIT_STATE),  # 74 is EX_IOERR: the state's or the mirror's
    (AgentError, "", EXIT_FAILURES),
)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "check-config":
            return cmd_check_config(args)
        if args.command == "demo":
            return cmd_demo(args)
        if args.command in SYNC_COMMANDS:
            return SYNC_COMMANDS[args.command](args)
        return asyncio.run(COMMANDS[args.command](args))
    except AgentError as exc:
        for kind, prefix, code in ERROR_EXITS:
            if isinstance(exc, kind):
                print(f"sync-agent: {prefix}{exc}", file=sys.stderr)
                return code
        raise
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
