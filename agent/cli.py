"""The `sync-agent` command line: parses arguments, maps outcomes to exit codes."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import webbrowser
from collections.abc import Mapping, Sequence
from pathlib import Path

from agent import __version__
from agent.agent import Agent, PassOutcome
from agent.config import Config, load_config
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
    StateError,
)
from agent.log import configure_logging
from agent.models import PassStats
from agent.state.store import Store

EXIT_RUNNING = 75  # EX_TEMPFAIL: another instance holds the state folder


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sync-agent",
        description="Keeps an offline mirror of documents from remote document APIs.",
    )
    parser.add_argument("--version", action="version", version=f"sync-agent {__version__}")
    parser.add_argument("--config", "-c", help="configuration file (default: $SYNC_AGENT_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("run", help="run the daemon: poll every source on its schedule")
    sync = sub.add_parser("sync", help="one pass over the sources, then exit")
    sync.add_argument("--source", action="append", help="only this source (repeatable)")
    status = sub.add_parser("status", help="what the mirror holds, per source")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_parser("check-config", help="validate the configuration without touching the network")
    demo = sub.add_parser(
        "demo", help="mirror a local sandbox API: see the agent work, no account needed"
    )
    demo.add_argument(
        "folder", nargs="?", default="demo-mirror", help="mirror folder (default ./demo-mirror)"
    )
    demo.add_argument("--documents", type=int, default=36, help="how many sandbox documents")
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
    return parser


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
    if sys.stderr.isatty():
        from agent.progress import terminal_progress  # noqa: PLC0415 - rich only on a terminal

        with terminal_progress(sys.stderr) as progress:
            async with Agent.open(config, progress=progress) as agent:
                results = await agent.sync_once(names)
    else:
        async with Agent.open(config) as agent:
            results = await agent.sync_once(names)
    print_summary(results)
    return sync_exit_code(results)


def print_summary(results: Mapping[str, PassOutcome]) -> None:
    for name, result in results.items():
        if isinstance(result, PassStats):
            print(
                f"{name}: {result.listed} listed, {result.downloaded} downloaded, "
                f"{result.moved} moved, {result.skipped} skipped, {result.removed} removed, "
                f"{result.failed} failed"
            )
        else:
            print(f"{name}: {result}", file=sys.stderr)


async def cmd_status(args: argparse.Namespace) -> int:
    from agent.web import status_json  # noqa: PLC0415 - aiohttp.web only for status

    config = load(args, secrets=False)  # status reads the state only: no secret needed
    async with Store.open(config.agent.state_url, config.agent.state_dir) as store:
        status = status_json(await store.status.sources([s.name for s in config.sources]))
    if args.json:
        print(json.dumps({"sources": status}, indent=2))
    else:
        from agent.progress import print_status  # noqa: PLC0415 - rich is only needed here

        print_status(status)
    return EXIT_OK


def cmd_check_config(args: argparse.Namespace) -> int:
    config = load_config(config_path(args))
    names = ", ".join(f"{s.name} ({s.type})" for s in config.sources) or "no sources"
    print(f"configuration OK: {names}")
    return EXIT_OK


async def cmd_run(args: argparse.Namespace) -> int:
    from agent.daemon import run_daemon  # noqa: PLC0415 - keeps `sync` start-up light

    path = config_path(args)
    config = load(args)
    return await run_daemon(config, path)


def cmd_demo(args: argparse.Namespace) -> int:
    from agent.demo import run_demo  # noqa: PLC0415 - the sandbox is only needed here

    configure_logging("warning", "auto")
    return asyncio.run(run_demo(Path(args.folder).absolute(), documents=args.documents))


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
}


ERROR_EXITS: tuple[tuple[type[AgentError], str, int], ...] = (
    (ConfigError, "configuration error: ", EXIT_CONFIG),
    (AuthenticationError, "authentication failed: ", EXIT_AUTH),
    (AlreadyRunningError, "", EXIT_RUNNING),
    (StateError, "", EXIT_STATE),
    (AgentError, "", EXIT_FAILURES),
)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "check-config":
            return cmd_check_config(args)
        if args.command == "demo":
            return cmd_demo(args)
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
