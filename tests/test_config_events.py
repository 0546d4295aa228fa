"""Configuring change notifications: `[[webhooks]]`, `on_change`, the journal's retention."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from agent.cli import main
from agent.config import parse_config
from agent.config.webhooks import check_secret, endpoint_name, fingerprint
from agent.errors import ConfigError
from tests.e2e.cli import write_config

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
SM = {"name": "sm", "type": "standard-metrics", "client_id": "id", "client_secret": "s"}


def parse(webhooks: list[dict[str, Any]], env: dict[str, str] | None = None, **agent: Any):  # type: ignore[no-untyped-def]
    data = {"agent": {"mirror_dir": "/tmp/m", **agent}, "sources": [SM], "webhooks": webhooks}
    return parse_config(data, env or {})


def test_a_webhook_reads_its_keys_and_is_named_after_its_url_without_the_query() -> None:
    config = parse(
        [{"url": "https://h.example:8443/in/sync?token=t0p", "secret": SECRET, "types": []}]
    )
    (hook,) = config.webhooks
    assert hook.name == "h_example-8443-in-sync"
    assert "t0p" not in hook.name
    assert hook.secret is not None
    assert hook.secret.reveal() == SECRET
    assert (hook.types, hook.sources) == ((), ())


def test_a_webhook_secret_comes_from_a_variable_too() -> None:
    config = parse([{"url": "http://127.0.0.1:9/x", "secret_env": "HOOK"}], {"HOOK": SECRET})
    assert config.webhooks[0].secret is not None
    assert config.webhooks[0].secret.reveal() == SECRET


@pytest.mark.parametrize(
    ("hook", "key"),
    [
        ({"url": "ftp://h/x", "secret": SECRET}, "webhooks[0].url"),
        ({"url": "not a url", "secret": SECRET}, "webhooks[0].url"),
        ({"url": "https://h/x"}, "webhooks[0].secret"),
        ({"url": "https://h/x", "secret": "s3cr3t-not-whsec"}, "webhooks[0].secret"),
        ({"url": "https://h/x", "secret": "whsec_c2hvcnQ="}, "webhooks[0].secret"),
        ({"url": "https://h/x", "secret": "whsec_***not base64***"}, "webhooks[0].secret"),
        (
            {"url": "https://h/x", "secret": SECRET, "types": ["document.added", "doc.gone"]},
            "webhooks[0].types[1]",
        ),
        ({"url": "https://h/x", "secret": SECRET, "types": "document.added"}, "webhooks[0].types"),
        ({"url": "https://h/x", "secret": SECRET, "sources": ["nope"]}, "webhooks[0].sources[0]"),
        ({"url": "https://h/x", "secret": SECRET, "name": "a b"}, "webhooks[0].name"),
        ({"url": "https://h/x", "secret": SECRET, "colour": "red"}, "webhooks[0].colour"),
    ],
)
def test_webhook_mistakes_name_the_key(hook: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse([hook])
    assert info.value.key == key


def test_a_bad_secret_is_never_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        parse([{"url": "https://h/x", "secret": "hunter2-hunter2"}])
    assert "hunter2" not in str(info.value)


def test_two_endpoints_with_one_name_are_refused() -> None:
    hook = {"url": "https://h/x", "secret": SECRET}
    with pytest.raises(ConfigError) as info:
        parse([hook, {**hook, "secret": SECRET}])
    assert info.value.key == "webhooks[1].name"


def test_secret_bounds_follow_the_specification() -> None:
    assert len(check_secret(SECRET, "k")) == 32
    assert len(check_secret(SECRET.rstrip("="), "k")) == 32  # unpadded base64 is accepted
    for size in (23, 65):
        with pytest.raises(ConfigError):
            check_secret("whsec_" + base64.b64encode(b"k" * size).decode(), "k")


def test_long_urls_give_bounded_distinct_names() -> None:
    a, b = (endpoint_name(f"https://h/{'p' * 80}/{tail}") for tail in ("a", "b"))
    assert a != b
    assert len(a) <= 64
    assert len(b) <= 64


def test_a_new_url_or_secret_changes_the_fingerprint() -> None:
    first = parse([{"url": "https://h/x", "secret": SECRET, "name": "n"}]).webhooks[0]
    moved = parse([{"url": "https://h/y", "secret": SECRET, "name": "n"}]).webhooks[0]
    assert fingerprint(first) != fingerprint(moved)
    assert SECRET not in fingerprint(first)


def test_on_change_per_source_replaces_the_agents() -> None:
    data = {
        "agent": {"mirror_dir": "/tmp/m", "on_change": ["/bin/reindex", "--quiet"]},
        "sources": [
            SM,
            {**SM, "name": "quiet", "on_change": []},
            {**SM, "name": "own", "on_change": ["/bin/x"]},
        ],
    }
    config = parse_config(data, {})
    assert [config.on_change(s) for s in config.sources] == [
        ("/bin/reindex", "--quiet"),
        (),
        ("/bin/x",),
    ]
    assert config.agent.on_change_timeout == 300.0
    assert config.agent.journal_retention == 30 * 86400


@pytest.mark.parametrize(
    ("agent", "key"),
    [
        ({"on_change": "/bin/reindex"}, "agent.on_change"),
        ({"on_change": [""]}, "agent.on_change[0]"),
        ({"journal_retention": "forever"}, "agent.journal_retention"),
        ({"on_change_timeout": 0}, "agent.on_change_timeout"),
    ],
)
def test_on_change_and_retention_mistakes_name_the_key(agent: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse([], **agent)
    assert info.value.key == key


@pytest.mark.parametrize(
    ("hook", "key"),
    [
        ({"url": "gopher://h/x", "secret": SECRET}, "webhooks[0].url"),
        ({"url": "https://h/x", "secret": "whsec_"}, "webhooks[0].secret"),
        ({"url": "https://h/x", "secret": SECRET, "types": ["nope"]}, "webhooks[0].types[0]"),
    ],
)
def test_check_config_exits_78_naming_the_webhook_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], hook: dict[str, Any], key: str
) -> None:
    path = write_config(tmp_path / "c.toml", {"mirror_dir": str(tmp_path / "m")}, [SM])
    lines = [f"{k} = {_toml(v)}" for k, v in hook.items()]
    path.write_text(path.read_text() + "\n[[webhooks]]\n" + "\n".join(lines) + "\n")
    assert main(["--config", str(path), "check-config"]) == 78
    assert f"configuration error: {key}:" in capsys.readouterr().err


def test_check_config_warns_about_an_open_listen_address_without_a_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    agent = {"mirror_dir": str(tmp_path / "m"), "listen": "0.0.0.0:8749"}
    path = write_config(tmp_path / "c.toml", agent, [SM])
    assert main(["--config", str(path), "check-config"]) == 0
    assert "agent.listen" in capsys.readouterr().err
    path = write_config(tmp_path / "c.toml", {**agent, "api_token": "t" * 20}, [SM])
    assert main(["--config", str(path), "check-config"]) == 0
    assert "agent.listen" not in capsys.readouterr().err


def _toml(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(f'"{v}"' for v in value) + "]"
    return f'"{value}"'
