"""The example Kubernetes manifest (deploy/kubernetes/sync-agent.yaml) runs replicas the way
docs/replicas.md says: several pods, one ReadWriteMany mirror, the state URL and the token
key from a Secret, probes on /healthz and /readyz, time to drain on SIGTERM, and a
configuration the agent accepts with the environment the Deployment gives it."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.config import Config, load_config

MANIFEST = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / "sync-agent.yaml"
PLACEHOLDERS = {"state-url": "postgresql+asyncpg://sync_agent:pw@postgres:5432/sync_agent"}


@pytest.fixture(scope="module")
def objects() -> dict[str, dict[str, Any]]:
    documents = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    return {d["kind"]: d for d in documents}


@pytest.fixture(scope="module")
def pod(objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = objects["Deployment"]["spec"]["template"]["spec"]
    return spec


@pytest.fixture(scope="module")
def container(pod: dict[str, Any]) -> dict[str, Any]:
    (only,) = pod["containers"]
    return only  # type: ignore[no-any-return]


@pytest.fixture
def config(objects: dict[str, dict[str, Any]], container: dict[str, Any], tmp_path: Path) -> Config:
    """The ConfigMap's file, loaded with the Deployment's environment (Secret values stand-in)."""
    path = tmp_path / "config.toml"
    path.write_text(objects["ConfigMap"]["data"]["config.toml"])
    env = {}
    for variable in container["env"]:
        if "value" in variable:
            env[variable["name"]] = variable["value"]
        elif not variable["valueFrom"]["secretKeyRef"].get("optional"):
            env[variable["name"]] = PLACEHOLDERS[variable["valueFrom"]["secretKeyRef"]["key"]]
    return load_config(path, env, secrets=False)


def mounts(container: dict[str, Any]) -> dict[str, str]:
    return {m["name"]: m["mountPath"] for m in container["volumeMounts"]}


def volumes(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in pod["volumes"]}


def test_the_deployment_runs_several_replicas(objects: dict[str, dict[str, Any]]) -> None:
    deployment = objects["Deployment"]
    assert deployment["spec"]["replicas"] > 1
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_every_replica_mounts_one_read_write_many_claim_as_the_mirror(
    objects: dict[str, dict[str, Any]],
    pod: dict[str, Any],
    container: dict[str, Any],
    config: Config,
) -> None:
    claim = objects["PersistentVolumeClaim"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    mirror = volumes(pod)["mirror"]["persistentVolumeClaim"]
    assert mirror["claimName"] == claim["metadata"]["name"]
    assert mounts(container)["mirror"] == str(config.agent.mirror_dir)


def test_the_state_url_and_the_token_key_come_from_the_secret(
    pod: dict[str, Any], container: dict[str, Any], config: Config
) -> None:
    """The URL (with its password) from a Secret; one token key shared by every replica."""
    (state_url,) = [v for v in container["env"] if v["name"] == "SYNC_AGENT_AGENT__STATE_URL"]
    assert state_url["valueFrom"]["secretKeyRef"]["key"] == "state-url"
    assert config.agent.state_url.startswith("postgresql+asyncpg://")
    state = volumes(pod)["state"]["secret"]
    assert [i["path"] for i in state["items"]] == ["secret.key"]
    assert mounts(container)["state"] == str(config.agent.state_dir)


def test_secret_files_named_by_the_configuration_are_mounted(
    pod: dict[str, Any], container: dict[str, Any], objects: dict[str, dict[str, Any]]
) -> None:
    """The api_token (POST /sync off loopback needs one) and the client secret are files."""
    data = tomllib.loads(objects["ConfigMap"]["data"]["config.toml"])
    named = {data["agent"]["api_token_file"], *(s["client_secret_file"] for s in data["sources"])}
    where = mounts(container)["secrets"]
    mounted = {f"{where}/{i['path']}" for i in volumes(pod)["secrets"]["secret"]["items"]}
    assert named <= mounted


def test_probes_ask_healthz_and_readyz_on_the_listen_port(
    container: dict[str, Any], config: Config
) -> None:
    (port,) = container["ports"]
    assert config.agent.listen.endswith(f":{port['containerPort']}")
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"


def test_sigterm_leaves_time_to_drain_before_sigkill(pod: dict[str, Any], config: Config) -> None:
    """The grace period outlasts shutdown_timeout, with room for letting leases go."""
    assert pod["terminationGracePeriodSeconds"] >= config.agent.shutdown_timeout + 15
