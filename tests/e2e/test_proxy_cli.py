"""Through the environment's HTTP proxy, end to end: the real CLI mirrors a Standard Metrics
sandbox whose API and storage hosts it can reach only through a forward proxy."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.cli import run_cli, write_config
from tests.e2e.test_standard_metrics_cli import World, mirror_digests, open_world, sha
from tests.proxy import ForwardProxy

pytestmark = pytest.mark.e2e
SECRET_ENV = {"SM_SECRET": "demo-secret"}


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async for w in open_world(tmp_path):
        yield w


def behind_proxy(world: World, tmp_path: Path) -> Path:
    """The world's API and storage named as hosts only the proxy can reach (`*.test`)."""
    world.storage.base_url = world.storage.base_url.replace("127.0.0.1", "storage.test")
    text = world.config.read_text().replace("127.0.0.1", "api.test")
    config = tmp_path / "proxied.toml"
    config.write_text(text)
    return config


async def test_every_request_of_a_pass_goes_through_the_proxy_with_its_credentials(
    world: World, tmp_path: Path
) -> None:
    """Token, listing, API hop and storage hop all go through `http_proxy`, each with the
    proxy's credentials; the storage host still gets no Authorization, and the proxy's
    password appears in no log line."""
    config = behind_proxy(world, tmp_path)
    proxy = ForwardProxy(credentials=("agent", "pr0xy pw"))
    async with proxy.running() as url:
        proxied = url.replace("http://", "http://agent:pr0xy%20pw@")
        result = await run_cli(
            "--config", str(config), "sync", env={**SECRET_ENV, "http_proxy": proxied}
        )
    assert result.code == 0, result.stderr
    digests = sorted(mirror_digests(world.mirror).values())
    assert digests == sorted(sha(world.api.content(i)) for i in world.api.document_ids())
    hosts = {s.target.split("/")[2].split(":")[0] for s in proxy.seen}
    assert hosts == {"api.test", "storage.test"}
    token = base64.b64encode(b"agent:pr0xy pw").decode()
    assert all(s.headers.get("proxy-authorization") == f"Basic {token}" for s in proxy.seen)
    storage = [s for s in proxy.seen if "//storage.test" in s.target]
    assert len(storage) == len(world.api.document_ids())
    assert all("authorization" not in s.headers for s in storage)
    assert world.storage.authorization_seen == []
    assert "pr0xy" not in result.stderr + result.stdout


async def test_loopback_hosts_are_reached_directly_whatever_the_proxy(
    world: World,
) -> None:
    """A proxy elsewhere cannot reach this machine's loopback: 127.0.0.1 is never proxied."""
    proxy = ForwardProxy()
    async with proxy.running() as url:
        result = await run_cli(
            "--config", str(world.config), "sync", env={**SECRET_ENV, "http_proxy": url}
        )
    assert result.code == 0, result.stderr
    assert proxy.seen == []
    assert len(mirror_digests(world.mirror)) == len(world.api.document_ids())


async def test_a_proxy_the_agent_cannot_use_is_a_configuration_error_naming_the_variable(
    tmp_path: Path,
) -> None:
    config = write_config(
        tmp_path / "config.toml",
        {"mirror_dir": str(tmp_path / "m"), "state_dir": str(tmp_path / "s")},
        [
            {
                "name": "sm",
                "type": "standard-metrics",
                "base_url": "http://api.test/v1",
                "client_id": "c",
                "client_secret": "s",
            }
        ],
    )
    env = {"HTTPS_PROXY": "socks5://agent:hunter2@127.0.0.1:1080"}
    result = await run_cli("--config", str(config), "check-config", env=env)
    assert result.code == 78
    assert "HTTPS_PROXY" in result.stderr
    assert "only http:// proxies" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout
