"""Maps a source `type` to its implementation, imported only when configured."""

from __future__ import annotations

from collections.abc import Callable

from agent.sources.base import Source, SourceContext

# Each source module is imported on first use only (a config with one type loads one).
# ruff: noqa: PLC0415


def _standard_metrics(ctx: SourceContext) -> Source:
    from agent.sources.standard_metrics import StandardMetricsSource

    return StandardMetricsSource(ctx)


def _huddle(ctx: SourceContext) -> Source:
    from agent.sources.huddle import HuddleSource

    return HuddleSource(ctx)


def _index_health(ctx: SourceContext) -> Source:
    from agent.sources.index_health import IndexHealthSource

    return IndexHealthSource(ctx)


def _opencde(ctx: SourceContext) -> Source:
    from agent.sources.opencde import OpenCdeSource

    return OpenCdeSource(ctx)


IMPLEMENTATIONS: dict[str, Callable[[SourceContext], Source]] = {
    "standard-metrics": _standard_metrics,
    "huddle": _huddle,
    "index-health": _index_health,
    "opencde": _opencde,
}


def build_source(ctx: SourceContext) -> Source:
    return IMPLEMENTATIONS[ctx.config.type](ctx)
