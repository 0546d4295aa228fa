"""Environment overrides: SYNC_AGENT_AGENT__<KEY> and SYNC_AGENT_SOURCES__<NAME>__<KEY>."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import Config, Secret, load_config
from agent.errors import ConfigError

FILE = """
[agent]
mirror_dir = "/srv/mirror"

[[sources]]
name = "my-portfolio"
type = "standard-metrics"
client_id = "id"
client_secret_env = "SM_SECRET"

[[sources]]
name = "huddle"
type = "huddle"
client_id = "id"
refresh_token = "r"
workspaces = ["1"]

[[sources]]
name = "reports"
type = "index-health"
base_url = "https://ih.example"
client_id = "id"
client_secret = "c"
[sources.user]
first_name = "Ada"
last_name = "Lovelace"
uid = "ada"
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(FILE)
    return path


def load(path: Path, **env: str) -> Config:
    return load_config(path, {"SM_SECRET": "from-env", **env})


def error(path: Path, **env: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(path, **env)
    return info.value


def test_agent_key_is_set_with_its_type(config_file: Path) -> None:
    """An [agent] integer comes from SYNC_AGENT_AGENT__<KEY> as a number, not text."""
    config = load(config_file, SYNC_AGENT_AGENT__MAX_CONCURRENT_DOWNLOADS="4")
    assert config.agent.max_concurrent_downloads == 4
    assert [(o.key, o.shown) for o in config.overrides] == [("agent.max_concurrent_downloads", "4")]


def test_source_name_matches_without_case_and_dash_as_underscore(config_file: Path) -> None:
    """`my-portfolio` is reached as MY_PORTFOLIO (or any case); durations parse as in the file."""
    config = load(config_file, SYNC_AGENT_SOURCES__My_Portfolio__POLL_INTERVAL="30s")
    assert config.source("my-portfolio").poll_interval == 30
    assert config.overrides[0].key == "sources.my-portfolio.poll_interval"


@pytest.mark.parametrize(
    ("variable", "value", "attribute", "expected"),
    [
        ("SYNC_AGENT_SOURCES__HUDDLE__ENABLED", "false", "enabled", False),
        ("SYNC_AGENT_SOURCES__HUDDLE__CLIENT_ID", "12345", "client_id", "12345"),
        ("SYNC_AGENT_SOURCES__HUDDLE__REQUESTS_PER_MINUTE", "60", "requests_per_minute", 60.0),
        ("SYNC_AGENT_SOURCES__HUDDLE__WORKSPACES", "1, 2", "settings.workspaces", ("1", "2")),
        ("SYNC_AGENT_SOURCES__HUDDLE__WORKSPACES", '["3", "4"]', "settings.workspaces", ("3", "4")),
        ("SYNC_AGENT_SOURCES__HUDDLE__AUTH_SCHEME", "OAuth2", "settings.auth_scheme", "OAuth2"),
        ("SYNC_AGENT_SOURCES__REPORTS__USER__EMAIL", "a@b.org", "settings.user.email", "a@b.org"),
    ],
)
def test_values_are_read_as_the_key_asks(
    config_file: Path, variable: str, value: str, attribute: str, expected: object
) -> None:
    """Booleans and numbers as TOML, text verbatim (even digits), lists JSON or comma-separated."""
    config = load(config_file, **{variable: value})
    name = variable.split("__")[1].lower()
    found: object = config.source(name)
    for part in attribute.split("."):
        found = getattr(found, part)
    assert found == expected


def test_agent_level_is_case_insensitive_and_sizes_parse(config_file: Path) -> None:
    """`DEBUG` is the level `debug`; `2G` is a size, as it would be in the file."""
    config = load(
        config_file, SYNC_AGENT_AGENT__LOG_LEVEL="DEBUG", SYNC_AGENT_AGENT__MIN_FREE_SPACE="2G"
    )
    assert (config.agent.log_level, config.agent.min_free_space) == ("debug", 2 << 30)


def test_a_secret_override_replaces_the_files_form_and_is_not_shown(config_file: Path) -> None:
    """Setting client_secret drops the file's client_secret_env; check-config shows ***."""
    config = load(config_file, SYNC_AGENT_SOURCES__MY_PORTFOLIO__CLIENT_SECRET="hunter2")
    assert config.source("my-portfolio").client_secret == Secret("hunter2")
    assert config.overrides[0].shown == "***"
    assert "hunter2" not in repr(config)


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"SYNC_AGENT_AGENT__MAX_CONCURRENT_DOWNLOADS": "many"}, "agent.max_concurrent_downloads"),
        ({"SYNC_AGENT_AGENT__MAX_CONCURRENT_DOWNLOADS": "0"}, "agent.max_concurrent_downloads"),
        ({"SYNC_AGENT_AGENT__BOGUS": "1"}, "agent.bogus"),
        ({"SYNC_AGENT_SOURCES__HUDDLE__POLL_INTERVAL": "soon"}, "sources.huddle.poll_interval"),
        ({"SYNC_AGENT_SOURCES__HUDDLE__ENABLED": "yes"}, "sources.huddle.enabled"),
        ({"SYNC_AGENT_SOURCES__HUDDLE__FOLDERS": '["x"'}, "sources.huddle.folders"),
        ({"SYNC_AGENT_SOURCES__HUDDLE__FOLDERS": "nope"}, "sources.huddle.folders[0]"),
        ({"SYNC_AGENT_SOURCES__REPORTS__USER__NICK": "x"}, "sources.reports.user.nick"),
        ({"SYNC_AGENT_SOURCES__HUDDLE__NAME": "other"}, "sources.huddle.name"),
        ({"SYNC_AGENT_SOURCES__HUDDLE__TYPE": "opencde"}, "sources.huddle.type"),
    ],
)
def test_a_bad_override_names_the_key_and_the_variable(
    config_file: Path, env: dict[str, str], key: str
) -> None:
    """The error carries the configuration key and says which variable set it."""
    exc = error(config_file, **env)
    assert exc.key == key
    assert next(iter(env)) in str(exc)


@pytest.mark.parametrize(
    "variable",
    [
        "SYNC_AGENT_SOURCES__NOBODY__POLL_INTERVAL",
        "SYNC_AGENT_AGNET__LOG_LEVEL",
        "SYNC_AGENT_SOURCES__HUDDLE",
        "SYNC_AGENT_AGENT__",
    ],
)
def test_a_variable_that_addresses_nothing_is_refused(config_file: Path, variable: str) -> None:
    """A misspelt section, an unknown source or a missing key part is an error, not ignored."""
    assert variable in str(error(config_file, **{variable: "1"}))


def test_two_sources_matching_one_variable_are_refused(tmp_path: Path) -> None:
    """`a-b` and `a_b` both read as A_B: the override would be ambiguous."""
    path = tmp_path / "agent.toml"
    source = 'type = "opencde"\nbase_url = "https://cde.example"\nclient_id = "c"\n'
    path.write_text(
        f'[agent]\nmirror_dir = "/m"\n[[sources]]\nname = "a-b"\n{source}'
        f'[[sources]]\nname = "a_b"\n{source}'
    )
    assert "several sources" in str(error(path, SYNC_AGENT_SOURCES__A_B__ENABLED="false"))


def test_other_variables_are_left_alone(config_file: Path) -> None:
    """SYNC_AGENT_CONFIG and the like have no `__`: they are not overrides."""
    assert load(config_file, SYNC_AGENT_CONFIG="/elsewhere.toml").overrides == ()


def test_check_config_lists_overrides_without_secret_values(config_file: Path) -> None:
    """The real CLI prints each overridden key and its variable, a secret as ***."""
    env = {
        **os.environ,
        "SM_SECRET": "x",
        "SYNC_AGENT_AGENT__MAX_CONCURRENT_DOWNLOADS": "4",
        "SYNC_AGENT_SOURCES__HUDDLE__REFRESH_TOKEN": "hunter2",
    }
    result = run_check_config(config_file, env)
    assert result.returncode == 0, result.stderr
    assert (
        "agent.max_concurrent_downloads = 4  (from SYNC_AGENT_AGENT__MAX_CONCURRENT_DOWNLOADS)"
        in (result.stdout)
    )
    assert "sources.huddle.refresh_token = ***" in result.stdout
    assert "hunter2" not in result.stdout + result.stderr


def test_a_bad_override_exits_78_naming_variable_and_key(config_file: Path) -> None:
    """The CLI turns a bad override into exit 78 and one line with the key and the variable."""
    env = {**os.environ, "SM_SECRET": "x", "SYNC_AGENT_AGENT__SHUTDOWN_TIMEOUT": "never"}
    result = run_check_config(config_file, env)
    assert result.returncode == 78
    assert "agent.shutdown_timeout" in result.stderr
    assert "SYNC_AGENT_AGENT__SHUTDOWN_TIMEOUT" in result.stderr
    assert "Traceback" not in result.stderr


def run_check_config(path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "--config", str(path), "check-config"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
