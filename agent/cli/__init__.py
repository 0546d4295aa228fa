"""The `sync-agent` command line: parses arguments (`parser`), runs the command
(`commands`), and maps outcomes to exit codes."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from agent.cli.commands import (
    cmd_check_config,
    cmd_completion,
    cmd_demo,
    cmd_events,
    cmd_get,
    cmd_init,
    cmd_login,
    cmd_run,
    cmd_select,
    cmd_status,
    cmd_sync,
    cmd_verify,
    print_summary,
    sync_exit_code,
)
from agent.cli.parser import COMPLETION_SHELLS, build_parser
from agent.errors import (
    EXIT_AUTH,
    EXIT_CONFIG,
    EXIT_FAILURES,
    EXIT_STATE,
    AgentError,
    AlreadyRunningError,
    AuthenticationError,
    ConfigError,
    MirrorError,
    StateError,
)

__all__ = ["COMPLETION_SHELLS", "build_parser", "main", "print_summary", "sync_exit_code"]

EXIT_RUNNING = 75  # EX_TEMPFAIL: another instance holds the state folder


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
