"""The `sync-agent` commands: one handler per command, each returning its exit status."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from agent import starter
from agent.agent import Agent, PassOutcome, acquire_lock
from agent.cli.parser import build_parser
from agent.config import Config, load_config
from agent.config.values import parse_download_reason
from agent.errors import (
    EXIT_AUTH,
    EXIT_CONFIG,
    EXIT_FAILURES,
    EXIT_OK,
    EXIT_STATE,
    AuthenticationError,
    ConfigError,
    StateError,
)
from agent.events.webhooks import deliver_due
from agent.log import configure_logging
from agent.models import PassStats
from agent.state.store import Store

EXIT_USAGE = 2  # as argparse exits for a usage mistake
DEFAULT_INIT_OUTPUT = "sync-agent.toml"


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
        await login(ctx, listen=config.agent.listen, open_url=_open_browser, timeout=args.timeout)
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
                ctx, listen=config.agent.listen, open_url=_open_browser, timeout=args.timeout
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


def _open_browser(url: str) -> bool:
    import webbrowser  # noqa: PLC0415 - for the browser commands only

    return webbrowser.open(url)


def cmd_completion(args: argparse.Namespace) -> int:
    import shtab  # noqa: PLC0415 - 45 ms of every start here, for this command only

    print(shtab.complete(build_parser(for_completion=True), shell=args.shell), end="")
    return EXIT_OK


def _opencde_context(config: Config, name: str):  # type: ignore[no-untyped-def]
    from agent.sources.context import source_context  # noqa: PLC0415

    source = config.source(name)
    if source.type != "opencde":
        raise ConfigError(f"sources.{name}.type", "login and select are for opencde sources")
    return source_context(config, source)
