"""Tests for agent.metrics: each series appears in the text exposition with its labels."""

from __future__ import annotations

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from agent.metrics import Metrics


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of render(), parsed by prometheus-client, keyed by name and labels."""
    text = metrics.render().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


def test_downloads_count_bytes_and_files_per_source() -> None:
    m = Metrics()
    m.add_download("alpha", 1000)
    m.add_download("alpha", 24, files=0)
    m.add_download("beta", 5)
    got = samples(m)
    assert got[key("sync_agent_downloaded_bytes_total", source="alpha")] == 1024
    assert got[key("sync_agent_downloaded_files_total", source="alpha")] == 1
    assert got[key("sync_agent_downloaded_bytes_total", source="beta")] == 5


def test_failures_are_counted_by_source_and_kind() -> None:
    m = Metrics()
    m.add_failure("alpha", "transient")
    m.add_failure("alpha", "transient")
    m.add_failure("alpha", "permanent")
    got = samples(m)
    assert got[key("sync_agent_failures_total", source="alpha", kind="transient")] == 2
    assert got[key("sync_agent_failures_total", source="alpha", kind="permanent")] == 1


def test_set_documents_replaces_counts_and_zeroes_vanished_states() -> None:
    m = Metrics()
    m.set_documents("alpha", {"synced": 10, "pending": 3})
    m.set_documents("alpha", {"synced": 13})
    got = samples(m)
    assert got[key("sync_agent_documents", source="alpha", state="synced")] == 13
    assert got[key("sync_agent_documents", source="alpha", state="pending")] == 0


def test_observe_pass_records_duration_end_time_and_success() -> None:
    m = Metrics(clock=lambda: 1_700_000_000.0)
    m.observe_pass("alpha", 4.0, ok=True)
    m.observe_pass("alpha", 0.2, ok=False)
    got = samples(m)
    assert got[key("sync_agent_pass_duration_seconds_count", source="alpha")] == 2
    assert got[key("sync_agent_pass_duration_seconds_sum", source="alpha")] == 4.2
    assert got[key("sync_agent_pass_duration_seconds_bucket", source="alpha", le="5.0")] == 2
    assert got[key("sync_agent_pass_duration_seconds_bucket", source="alpha", le="1.0")] == 1
    assert got[key("sync_agent_last_pass_timestamp_seconds", source="alpha")] == 1.7e9
    assert got[key("sync_agent_last_pass_success", source="alpha")] == 0
    assert got[key("sync_agent_last_success_timestamp_seconds", source="alpha")] == 1.7e9


def test_queue_depth_rate_wait_and_loop_lag() -> None:
    m = Metrics()
    m.set_queue_depth(7)
    m.add_rate_wait("alpha", 1.5)
    m.add_rate_wait("alpha", 0.5)
    m.set_loop_lag(0.25)
    got = samples(m)
    assert got[key("sync_agent_queue_depth")] == 7
    assert got[key("sync_agent_rate_limit_wait_seconds_total", source="alpha")] == 2.0
    assert got[key("sync_agent_event_loop_lag_seconds")] == 0.25


def test_remove_source_drops_only_that_sources_series() -> None:
    m = Metrics()
    for source in ("alpha", "beta"):
        m.add_download(source, 1)
        m.add_failure(source, "transient")
        m.set_documents(source, {"synced": 1})
        m.observe_pass(source, 1.0, ok=True)
    m.remove_source("alpha")
    sources = {dict(labels).get("source") for _, labels in samples(m)}
    assert "alpha" not in sources
    assert "beta" in sources


def test_each_metrics_object_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.add_download("alpha", 10)
    assert key("sync_agent_downloaded_bytes_total", source="alpha") not in samples(second)
    assert (
        REGISTRY.get_sample_value("sync_agent_downloaded_bytes_total", {"source": "alpha"}) is None
    )


def test_poll_interval_is_exported_per_source_and_dropped_with_it() -> None:
    m = Metrics()
    m.set_poll_interval("alpha", 900.0)
    m.set_poll_interval("beta", 300.0)
    m.remove_source("beta")
    got = samples(m)
    assert got[key("sync_agent_poll_interval_seconds", source="alpha")] == 900.0
    assert key("sync_agent_poll_interval_seconds", source="beta") not in got


def test_free_space_is_read_at_each_scrape_beside_the_guard_threshold() -> None:
    free = [5 << 30]
    m = Metrics()
    m.watch_free_space(lambda: free[0], 1 << 30)
    assert samples(m)[key("sync_agent_mirror_free_bytes")] == 5 << 30
    free[0] = 1 << 20
    got = samples(m)
    assert got[key("sync_agent_mirror_free_bytes")] == 1 << 20
    assert got[key("sync_agent_min_free_space_bytes")] == 1 << 30
