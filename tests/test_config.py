"""Configuration: every mistake names its key; secrets come from files or the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import Secret, load_config, parse_config, parse_duration, parse_size
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
