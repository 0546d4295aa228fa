"""Configuration: every mistake names its key; secrets come from files or the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import (
    AgentConfig,
    Secret,
    load_config,
    parse_config,
    parse_duration,
    parse_size,
)
from agent.errors import ConfigError

BASE = {"agent": {"mirror_dir": "/tmp/m"}}
SM = {"name": "sm", "type": "standard-metrics", "client_id": "id", "client_secret": "s"}


def parse(sources: list[dict[str, object]], env: dict[str, str] | None = None, **agent: object):  # type: ignore[no-untyped-def]
    return parse_config({"agent": {"mirror_dir": "/tmp/m", **agent}, "sources": sources}, env or {})


def key_of(**kw: object) -> str:
    with pytest.raises(ConfigError) as info:
        parse(**kw)  # type: ignore[arg-type]
    return info.value.key


def test_standard_metrics_defaults() -> None:
    cfg = parse([SM])
    source = cfg.sources[0]
    assert source.base_url == "https://api.standardmetrics.io/v1"
    assert source.settings.token_url == "https://api.standardmetrics.io/o/token/"  # type: ignore[union-attr]
    assert source.requests_per_minute == 120
    assert cfg.agent.max_concurrent_downloads == 8


@pytest.mark.parametrize(
    ("sources", "agent", "key"),
    [
        ([{**SM, "bogus": 1}], {}, "sources.sm.bogus"),
        ([{**SM, "poll_interval": "soon"}], {}, "sources.sm.poll_interval"),
        ([SM, SM], {}, "sources[1].name"),
        ([{**SM, "name": "bad name"}], {}, "sources[0].name"),
        ([{k: v for k, v in SM.items() if k != "client_secret"}], {}, "sources.sm.client_secret"),
        ([{**SM, "type": "ftp"}], {}, "sources.sm.type"),
        ([SM], {"max_concurrent_downloads": "8"}, "agent.max_concurrent_downloads"),
        ([SM], {"log_format": "xml"}, "agent.log_format"),
        (
            [{**SM, "client_secret": None, "client_secret_env": "NOPE"}],
            {},
            "sources.sm.client_secret_env",
        ),
    ],
)
def test_mistakes_name_the_key(
    sources: list[dict[str, object]], agent: dict[str, object], key: str
) -> None:
    sources = [{k: v for k, v in s.items() if v is not None} for s in sources]
    with pytest.raises(ConfigError) as info:
        parse(sources, **agent)
    assert info.value.key == key


def test_secrets_from_file_and_env_never_print(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-file\n")
    src = {**SM, "client_secret": None, "client_secret_file": "${CREDS}/secret"}
    src = {k: v for k, v in src.items() if v is not None}
    cfg = parse([src], env={"CREDS": str(tmp_path)})
    assert cfg.sources[0].client_secret == Secret("from-file")
    assert "from-file" not in repr(cfg)


def test_huddle_download_reason_is_validated() -> None:
    huddle = {
        "name": "h",
        "type": "huddle",
        "client_id": "c",
        "refresh_token": "r",
        "workspaces": ["1"],
    }
    assert parse([huddle]).sources[0].settings.download_reason == "offline-file"  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="download_reason"):
        parse([{**huddle, "download_reason": "because"}])
    parse([{**huddle, "download_reason": "other/" + "x" * 100}])
    with pytest.raises(ConfigError):
        parse([{**huddle, "download_reason": "other/" + "x" * 101}])


def test_opencde_never_polls_more_often_than_five_minutes() -> None:
    cde = {
        "name": "c",
        "type": "opencde",
        "base_url": "https://cde.example",
        "client_id": "c",
        "poll_interval": "30s",
    }
    assert parse([cde]).sources[0].poll_interval == 300


def test_units() -> None:
    assert parse_duration("5m", "k") == 300
    assert parse_duration(90, "k") == 90
    assert parse_size("1G", "k") == 1 << 30
    assert parse_size("512K", "k") == 512 * 1024


def test_bad_toml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[agent\nmirror_dir = 1")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "toml"


def test_missing_agent_table() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"sources": []}, {})
    assert info.value.key == "agent"
    assert BASE


HUDDLE = {
    "name": "h",
    "type": "huddle",
    "client_id": "c",
    "refresh_token": "r",
    "workspaces": ["1"],
}
IH = {
    "name": "ih",
    "type": "index-health",
    "base_url": "https://ih.example",
    "client_id": "c",
    "client_secret": "s",
    "user": {"first_name": "Ada", "last_name": "Lovelace", "uid": "ada"},
}


@pytest.mark.parametrize(
    ("sources", "agent", "key", "shown"),
    [
        ([SM], {"max_concurrent_downloads": "8"}, "agent.max_concurrent_downloads", "'8'"),
        ([SM], {"max_concurrent_downloads": True}, "agent.max_concurrent_downloads", "True"),
        ([SM], {"max_connections_per_host": 0}, "agent.max_connections_per_host", "got 0"),
        ([SM], {"log_level": "loud"}, "agent.log_level", "'loud'"),
        ([SM], {"min_free_space": "lots"}, "agent.min_free_space", "'lots'"),
        ([{**SM, "requests_per_minute": 0}], {}, "sources.sm.requests_per_minute", "got 0"),
        ([{**HUDDLE, "workspaces": [""]}], {}, "sources.h.workspaces[0]", "''"),
        ([{**HUDDLE, "folders": ["nope"]}], {}, "sources.h.folders[0]", "'nope'"),
        ([{**HUDDLE, "auth_scheme": "Basic"}], {}, "sources.h.auth_scheme", "'Basic'"),
        ([{**HUDDLE, "trust_folder_times": "yes"}], {}, "sources.h.trust_folder_times", "'yes'"),
        ([{**IH, "user": {**IH["user"], "last_name": 5}}], {}, "sources.ih.user.last_name", "5"),
    ],
)
def test_mistakes_show_the_value_as_written(
    sources: list[dict[str, object]], agent: dict[str, object], key: str, shown: str
) -> None:
    """Every kind of mistake (type, bound, choice, unit, list item) names the key and the value."""
    with pytest.raises(ConfigError) as info:
        parse(sources, **agent)
    assert (info.value.key, shown in info.value.message) == (key, True)


@pytest.mark.parametrize(
    ("source", "key", "message"),
    [
        ({**IH, "user": {**IH["user"], "nick": "x"}}, "sources.ih.user.nick", "unknown key"),
        ({k: v for k, v in IH.items() if k != "user"}, "sources.ih.user", "is required"),
        ({**IH, "user": {"first_name": "A", "last_name": "L"}}, "sources.ih.user.email", "one of"),
        ({**HUDDLE, "workspaces": []}, "sources.h.workspaces", "workspaces and/or folders"),
        ({**HUDDLE, "settings": {}}, "sources.h.settings", "unknown key"),
        ({**SM, "client_id": None}, "sources.sm.client_id", "is required"),
        ({**IH, "base_url": None}, "sources.ih.base_url", "is required"),
        ({**SM, "client_secret_file": "/x"}, "sources.sm.client_secret_file", "only one of"),
    ],
)
def test_rules_across_keys_name_the_key(source: dict[str, object], key: str, message: str) -> None:
    """Nested tables, per-type rules and secret forms are checked and named like plain keys."""
    source = {k: v for k, v in source.items() if v is not None}
    with pytest.raises(ConfigError) as info:
        parse([source])
    assert info.value.key == key
    assert message in info.value.message


def test_a_secret_written_where_a_variable_name_belongs_is_not_echoed() -> None:
    """`client_secret_env = "<the token itself>"` is refused without printing the token."""
    src = {**SM, "client_secret": None, "client_secret_env": "tok-3f9a.b"}
    with pytest.raises(ConfigError) as info:
        parse([{k: v for k, v in src.items() if v is not None}])
    assert "tok-3f9a.b" not in str(info.value)


def test_without_secrets_unreadable_or_missing_secrets_stay_unset(tmp_path: Path) -> None:
    """`status` mode: a missing refresh token or an unreadable secret file is not an error."""
    huddle = {k: v for k, v in HUDDLE.items() if k != "refresh_token"}
    sm = {**{k: v for k, v in SM.items() if k != "client_secret"}, "client_secret_file": "/nope"}
    data = {"agent": {"mirror_dir": "/m"}, "sources": [huddle, sm]}
    config = parse_config(data, {}, secrets=False)
    assert config.source("h").settings.refresh_token is None  # type: ignore[union-attr]
    assert config.source("sm").client_secret is None
    with pytest.raises(ConfigError):
        parse_config(data, {})


def test_defaults_by_source_type() -> None:
    """Huddle's base URL, token URL and untrusted folder times, Index Health's user, the state."""
    cfg = parse_config(
        {"agent": {"mirror_dir": "~/m"}, "sources": [HUDDLE, IH]}, {"STATE_DIRECTORY": "/var/s"}
    )
    huddle, ih = cfg.sources
    assert (huddle.base_url, huddle.requests_per_minute) == ("https://api.huddle.net", None)
    assert huddle.settings.token_url == "https://login.huddle.net/token"  # type: ignore[union-attr]
    assert huddle.settings.trust_folder_times is False  # type: ignore[union-attr]
    assert ih.settings.user.uid == "ada"  # type: ignore[union-attr]
    assert cfg.agent.state_url == "sqlite+aiosqlite:////var/s/state.db"
    assert cfg.agent.mirror_dir == Path("~/m").expanduser()


def test_objects_are_frozen_and_built_by_keyword() -> None:
    """Config objects cannot be changed after loading, and positional construction is refused."""
    source = parse([SM]).sources[0]
    with pytest.raises(AttributeError):
        source.poll_interval = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        AgentConfig(Path("/m"), Path("/s"), "sqlite+aiosqlite://")  # type: ignore[misc]
