"""Configuration: the TOML file and its environment overrides, loaded once into frozen objects.

Every mistake becomes a `ConfigError` naming the key (exit 78). Secrets are read from the
file, a file path or an environment variable, and are wrapped so they never print. The
modules, one job each: `model` declares the tables and keys, `values` parses the values a
plain type cannot check, `secret` reads secrets, `schema` applies the declarations through
msgspec, `kinds` holds what each source type adds, `webhooks` reads `[[webhooks]]`,
`proxies` reads the HTTP proxy variables, `load` reads the file. `docs/configuration.md`
lists the keys.
"""

from agent.config.kinds import SOURCE_TYPES
from agent.config.load import load_config, parse_config
from agent.config.model import (
    AgentConfig,
    Config,
    EnvOverride,
    HuddleSettings,
    IndexHealthSettings,
    IndexHealthUser,
    OpenCdeSettings,
    SourceConfig,
    SourceSettings,
    StandardMetricsSettings,
    WebhookConfig,
)
from agent.config.secret import Secret
from agent.config.values import DOWNLOAD_REASONS, parse_duration, parse_size

__all__ = [
    "DOWNLOAD_REASONS",
    "SOURCE_TYPES",
    "AgentConfig",
    "Config",
    "EnvOverride",
    "HuddleSettings",
    "IndexHealthSettings",
    "IndexHealthUser",
    "OpenCdeSettings",
    "Secret",
    "SourceConfig",
    "SourceSettings",
    "StandardMetricsSettings",
    "WebhookConfig",
    "load_config",
    "parse_config",
    "parse_duration",
    "parse_size",
]
