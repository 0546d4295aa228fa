"""`sync-agent completion SHELL`: scripts generated from the parser, valid and working."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli import COMPLETION_SHELLS, build_parser


def script(shell: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "agent", "completion", shell],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def subcommands() -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return list(sub.choices)


def shell_binary(name: str) -> str:
    """The shell's path; a missing shell skips the test only outside CI (CI installs it)."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed (.ci/run installs it)")
        pytest.skip(f"{name} is not installed")
    return path


def syntax_checked(shell: str, flag: str, text: str, path: Path) -> Path:
    """Write the script to `path` and assert `shell flag path` (a syntax check) accepts it."""
    path.write_text(text)
    check = subprocess.run(
        [shell_binary(shell), flag, str(path)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stderr
    return path


@pytest.fixture(scope="module")
def scripts() -> dict[str, str]:
    return {shell: script(shell) for shell in COMPLETION_SHELLS}


def test_every_subcommand_of_the_parser_is_in_every_script(scripts: dict[str, str]) -> None:
    """The scripts come from the parser: each lists every subcommand it has, init included."""
    names = subcommands()
    assert {"init", "completion", "sync", "check-config"} <= set(names)
    for shell, text in scripts.items():
        missing = [n for n in names if n not in text]
        assert missing == [], f"{shell} script lacks {missing}"


def test_bash_script_parses_and_completes(scripts: dict[str, str], tmp_path: Path) -> None:
    """bash -n is clean, and sourcing it completes a subcommand and an option's choices."""
    path = syntax_checked("bash", "-n", scripts["bash"], tmp_path / "sync-agent.bash")
    probe = (
        f"source {path}\n"
        'complete_words() { COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1));'
        ' COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}; COMPREPLY=();'
        ' _shtab_sync_agent sync-agent "${COMP_WORDS[COMP_CWORD]}";'
        ' printf "%s\\n" "${COMPREPLY[@]}"; }\n'
        "complete_words sync-agent in\n"
        "complete_words sync-agent init --type hu\n"
    )
    result = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=False)
    assert result.stdout.split() == ["init", "huddle"], result.stderr


def test_bash_completes_file_names_after_the_options_that_take_one(
    scripts: dict[str, str], tmp_path: Path
) -> None:
    """--config, init --output and get --output complete file names; others do not."""
    path = syntax_checked("bash", "-n", scripts["bash"], tmp_path / "sync-agent.bash")
    (tmp_path / "mirror.toml").write_text("")
    probe = (
        f"cd {tmp_path}; source {path}\n"
        'complete_words() { COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1));'
        ' COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}; COMPREPLY=();'
        ' _shtab_sync_agent sync-agent "${COMP_WORDS[COMP_CWORD]}";'
        ' printf "%s\\n" "${COMPREPLY[@]}"; echo --; }\n'
        "complete_words sync-agent --config mirr\n"
        "complete_words sync-agent init --output mirr\n"
        "complete_words sync-agent get --output mirr\n"
        "complete_words sync-agent sync --source mirr\n"
    )
    result = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=False)
    answers = [part.split() for part in result.stdout.split("--\n")][:4]
    assert answers == [["mirror.toml"]] * 3 + [[]], result.stdout + result.stderr


def test_zsh_script_parses(scripts: dict[str, str], tmp_path: Path) -> None:
    """zsh -n (syntax only) accepts the zsh script."""
    syntax_checked("zsh", "-n", scripts["zsh"], tmp_path / "_sync-agent")
    assert scripts["zsh"].startswith("#compdef sync-agent")


def test_fish_script_parses_and_completes(scripts: dict[str, str], tmp_path: Path) -> None:
    """fish --no-execute accepts the script, and fish completes a subcommand with it."""
    path = syntax_checked("fish", "--no-execute", scripts["fish"], tmp_path / "sync-agent.fish")
    result = subprocess.run(
        ["fish", "--no-config", "-c", f"source {path}; complete -C 'sync-agent compl'"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert [line.split("\t")[0] for line in result.stdout.splitlines()] == ["completion"], (
        result.stdout + result.stderr
    )


def test_unknown_shell_is_refused() -> None:
    """Only bash, zsh and fish are offered; another name is a usage error."""
    result = subprocess.run(
        [sys.executable, "-m", "agent", "completion", "tcsh"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
