"""The one-pass summary names each source once, on stdout for a pass, on stderr for a failure."""

from __future__ import annotations

import pytest

from agent.cli import print_summary
from agent.errors import FatalSourceError, StateError


def test_failed_source_is_named_once_even_when_its_error_names_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A source error already says `hd: ...`; other errors get the source's name in front."""
    failures = {"hd": FatalSourceError("hd", "listing failed"), "sm": StateError("refused")}
    print_summary(failures)
    err = capsys.readouterr().err.splitlines()
    assert err == ["hd: listing failed", "sm: refused"]
