"""Maps a source `type` to its implementation, imported only when configured."""

from __future__ import annotations

import importlib
from typing import cast

from agent.sources.base import Source, SourceContext

IMPLEMENTATIONS = {
    "standard-metrics": "agent.sources.standard_metrics:StandardMetricsSource",
    "huddle": "agent.sources.huddle:HuddleSource",
    "index-health": "agent.sources.index_health:IndexHealthSource",
    "opencde": "agent.sources.opencde:OpenCdeSource",
}


def build_source(ctx: SourceContext) -> Source:
    module_name, _, class_name = IMPLEMENTATIONS[ctx.config.type].partition(":")
    implementation = getattr(importlib.import_module(module_name), class_name)
    return cast(Source, implementation(ctx))
