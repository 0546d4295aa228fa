"""Structured logging: JSON lines off a terminal, console output on one, secrets redacted."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from agent.errors import safe_url

SECRET_KEYS = re.compile(r"(secret|token|password|authorization|signature|credential)", re.I)
URL_RE = re.compile(r"https?://[^\s\"'<>]+")
REDACTED = "[redacted]"


def redact_value(value: Any) -> Any:
    """Strip query strings (signatures) from any URL found inside a string value."""
    if isinstance(value, str) and "://" in value:
        return URL_RE.sub(lambda m: safe_url(m.group(0)), value)
    return value


def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: hide secret-looking fields and URL signatures."""
    for key, value in list(event.items()):
        if key != "event" and SECRET_KEYS.search(key) and value is not None:
            event[key] = REDACTED
        else:
            event[key] = redact_value(value)
    return event


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Set up structlog once for the process."""
    stream = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact,
            structlog.processors.format_exc_info
            if use_json
            else structlog.processors.StackInfoRenderer(),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )


def get_logger(**context: Any) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger().bind(**context)
    return logger
