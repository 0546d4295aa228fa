"""`sync-agent init`: what it writes passes check-config, it never overwrites, it asks on a TTY."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pexpect
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.config import SOURCE_TYPES
from agent.templates import HEADER, SECRET_KEYS, TEMPLATES, toml_string

CONFIG_DIR = Path(__file__).parent.parent / "config"
SECRETS = {  # what the *_env references init writes by default name
    "PORTFOLIO_CLIENT_SECRET": "x",
    "HUDDLE_REFRESH_TOKEN": "x",
    "INDEX_HEALTH_CLIENT_SECRET": "x",
    "CDE_CLIENT_SECRET": "x",
}
KEY_LINE = re.compile(r"^#?\s*([a-z_]+)\s*=", re.MULTILINE)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real CLI off a terminal (stdin is not a TTY, so init asks nothing)."""
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {}), "SYNC_AGENT_CONFIG": ""},
        check=False,
        timeout=60,
    )


@pytest.mark.parametrize(
    "types", [[t] for t in SOURCE_TYPES] + [list(SOURCE_TYPES)], ids=[*SOURCE_TYPES, "all-four"]
)
def test_written_file_passes_check_config(tmp_path: Path, types: list[str]) -> None:
    """init for these types writes a file that check-config accepts, run by init and again."""
    out = tmp_path / "conf" / "agent.toml"
    flags = [a for t in types for a in ("--type", t)]
    result = cli("init", *flags, "--output", str(out), "--workspace", "42", env=SECRETS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "configuration OK" in result.stdout
    assert f"--config {out} sync --dry-run" in result.stdout
    again = cli("--config", str(out), "check-config", env=SECRETS)
    assert again.returncode == 0, again.stderr
    data = tomllib.loads(out.read_text())
    assert [s["type"] for s in data["sources"]] == types
    for source in data["sources"]:  # secrets are references, never values
        assert not {"client_secret", "refresh_token"} & source.keys()


def test_missing_secret_is_written_but_reported_with_exit_78(tmp_path: Path) -> None:
    """Without the secret in the environment the file is written and init says what to set."""
    out = tmp_path / "agent.toml"
    result = cli("init", "--type", "standard-metrics", "--output", str(out))
    assert result.returncode == 78
    assert out.is_file()
    assert "PORTFOLIO_CLIENT_SECRET is not set" in result.stderr
    assert "$PORTFOLIO_CLIENT_SECRET" in result.stdout
    assert "Traceback" not in result.stderr


def test_existing_file_is_kept_without_force_and_replaced_with_it(tmp_path: Path) -> None:
    """An existing file stays byte-identical (exit 73) unless --force replaces it."""
    out = tmp_path / "agent.toml"
    out.write_bytes(b"# mine\n")
    args = ["init", "--type", "huddle", "--output", str(out), "--client-id", "huddle=abc"]
    refused = cli(*args, env=SECRETS)
    assert refused.returncode == 73
    assert "already exists" in refused.stderr
    assert "--force" in refused.stderr
    assert out.read_bytes() == b"# mine\n"
    forced = cli(*args, "--force", env=SECRETS)
    assert forced.returncode == 0, forced.stderr
    assert tomllib.loads(out.read_text())["sources"][0]["client_id"] == "abc"
    assert [p.name for p in tmp_path.iterdir()] == ["agent.toml"]  # no temporary left


def test_flags_fill_the_essentials_and_placeholders_are_named(tmp_path: Path) -> None:
    """Typed flags reach their source; what no flag gave is listed as an example value."""
    out = tmp_path / "agent.toml"
    result = cli(
        "init",
        *("--type", "index-health", "--type", "opencde", "--output", str(out)),
        *("--mirror-dir", str(tmp_path / "m"), "--name", "opencde=models"),
        *("--client-id", "opencde=cde-id", "--base-url", "index-health=https://ih.test"),
        *("--user-name", "Ada Lovelace", "--user-email", "ada@example.com"),
        env={**SECRETS, "MODELS_CLIENT_SECRET": "x"},
    )
    assert result.returncode == 0, result.stderr
    data = tomllib.loads(out.read_text())
    ih, cde = data["sources"]
    assert data["agent"]["mirror_dir"] == str(tmp_path / "m")
    assert ih["base_url"] == "https://ih.test"
    assert ih["user"] == {"first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com"}
    assert (cde["name"], cde["client_id"]) == ("models", "cde-id")
    assert cde["client_secret_env"] == "MODELS_CLIENT_SECRET"
    assert "sources.index-health.client_id, sources.models.base_url" in result.stdout
    assert "login models" in result.stdout


def test_no_type_off_a_terminal_is_a_usage_error(tmp_path: Path) -> None:
    """Scripts must say which types they want; nothing is written."""
    result = cli("init", "--output", str(tmp_path / "agent.toml"))
    assert result.returncode == 2
    assert "--type" in result.stderr
    assert not (tmp_path / "agent.toml").exists()


def test_terminal_prompts_for_essentials_and_hides_the_secret(tmp_path: Path) -> None:
    """On a TTY init asks, re-asks a bad name, stores a typed secret in a 0600 file unseen."""
    out = tmp_path / "agent.toml"
    env = {**os.environ, "SYNC_AGENT_CONFIG": "", "SM_CLIENT_SECRET": "x", "TERM": "dumb"}
    child = pexpect.spawn(
        sys.executable,
        ["-m", "agent", "init", "--output", str(out)],
        env=env,
        encoding="utf-8",
        timeout=30,
    )
    answers = [
        ("Source types", "huddle, standard-metrics"),
        ("Mirror folder", str(tmp_path / "mirror")),
        ("Name of the huddle source", ""),
        ("huddle client id", "hud-client"),
        ("workspace ids", "7, 8"),
        ("huddle refresh token", "s3cret-refresh-token"),
        ("Name of the standard-metrics source", "bad name!"),
        ("use 1-64 letters", "sm"),
        ("standard-metrics client id", "sm-client"),
        ("standard-metrics client secret", ""),
    ]
    seen = []
    for prompt, answer in answers:
        child.expect(re.escape(prompt))
        seen.append(child.before + child.after)
        child.sendline(answer)
    child.expect(pexpect.EOF)
    seen.append(child.before)
    child.close()
    transcript = "".join(seen)
    assert child.exitstatus == 0, transcript
    assert "s3cret-refresh-token" not in transcript  # getpass: never echoed
    text = out.read_text()
    assert "s3cret-refresh-token" not in text
    data = tomllib.loads(text)
    huddle, sm = data["sources"]
    assert (huddle["name"], huddle["client_id"], huddle["workspaces"]) == (
        "huddle",
        "hud-client",
        ["7", "8"],
    )
    secret_file = Path(huddle["refresh_token_file"])
    assert secret_file.read_text() == "s3cret-refresh-token\n"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert (sm["name"], sm["client_id"], sm["client_secret_env"]) == (
        "sm",
        "sm-client",
        "SM_CLIENT_SECRET",
    )
    assert "configuration OK" in transcript


def test_existing_file_is_refused_before_any_question(tmp_path: Path) -> None:
    """On a TTY an existing output is reported at once, not after the user typed answers."""
    out = tmp_path / "agent.toml"
    out.write_text("# mine\n")
    child = pexpect.spawn(
        sys.executable, ["-m", "agent", "init", "--output", str(out)], encoding="utf-8", timeout=30
    )
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 73
    assert "already exists" in child.before
    assert "Source types" not in child.before


def example_keys() -> dict[str, set[str]]:
    """Every key an example in config/ shows for each source type, set or commented out."""
    found: dict[str, set[str]] = {t: set() for t in SOURCE_TYPES}
    for example in CONFIG_DIR.glob("*.toml"):
        for block in example.read_text().split("[[sources]]")[1:]:
            kind = tomllib.loads(block.split("\n[sources.user]")[0])["type"]
            found[kind] |= {_secret_base(k) for k in KEY_LINE.findall(block)}
    return found


def _secret_base(key: str) -> str:
    return re.sub(r"_(env|file)$", "", key)


@pytest.mark.parametrize("kind", SOURCE_TYPES)
def test_template_shows_every_key_its_config_example_shows(kind: str) -> None:
    """The template of a type is kept in step with config/: no documented key is missing."""
    template_keys = {_secret_base(k) for k in KEY_LINE.findall(TEMPLATES[kind])}
    template_keys.add(SECRET_KEYS[kind])  # rendered as a *_env or *_file reference
    assert example_keys()[kind] - template_keys == set()


def test_header_shows_every_agent_key_the_examples_show() -> None:
    """The [agent] table init writes mentions every agent setting an example uses."""
    shown = set()
    for example in CONFIG_DIR.glob("*.toml"):
        agent_table = example.read_text().split("[agent]")[1].split("[[sources]]")[0]
        shown |= {_secret_base(k) for k in KEY_LINE.findall(agent_table)}
    assert shown - {_secret_base(k) for k in KEY_LINE.findall(HEADER)} == set()


@given(st.text())
def test_toml_string_round_trips_any_text(value: str) -> None:
    """Whatever a user types becomes a TOML string that reads back unchanged."""
    assert tomllib.loads(f"v = {toml_string(value)}")["v"] == value
