"""Prometheus metrics of one daemon, kept in its own registry and passed down (no globals).

The daemon creates one `Metrics`, hands it to the sync engine, the scheduler and the web
app, and `/metrics` serves `render()`. Nothing registers in prometheus-client's global
registry, so two agents (or two tests) in one process never share a series.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PASS_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


class Metrics:
    """Every series the agent exports; methods are cheap and safe to call from the loop."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._clock = clock
        self._states: dict[str, set[str]] = {}
        self._kinds: dict[str, set[str]] = {}
        reg = self.registry
        self.documents = Gauge(
            "sync_agent_documents",
            "Documents known to the agent, by sync state.",
            ["source", "state"],
            registry=reg,
        )
        self.downloaded_bytes = Counter(
            "sync_agent_downloaded_bytes", "Bytes downloaded.", ["source"], registry=reg
        )
        self.downloaded_files = Counter(
            "sync_agent_downloaded_files", "Files downloaded completely.", ["source"], registry=reg
        )
        self.failures = Counter(
            "sync_agent_failures", "Failures, by kind.", ["source", "kind"], registry=reg
        )
        self.pass_duration = Histogram(
            "sync_agent_pass_duration_seconds",
            "Duration of one sync pass.",
            ["source"],
            buckets=PASS_BUCKETS,
            registry=reg,
        )
        self.queue_depth = Gauge(
            "sync_agent_queue_depth", "Downloads waiting to start.", registry=reg
        )
        self.rate_wait = Counter(
            "sync_agent_rate_limit_wait_seconds",
            "Time spent waiting for a rate limit or Retry-After.",
            ["source"],
            registry=reg,
        )
        self.last_pass = Gauge(
            "sync_agent_last_pass_timestamp_seconds",
            "Unix time the last sync pass ended.",
            ["source"],
            registry=reg,
        )
        self.last_pass_success = Gauge(
            "sync_agent_last_pass_success",
            "1 if the last sync pass succeeded, else 0.",
            ["source"],
            registry=reg,
        )
        self.last_success = Gauge(
            "sync_agent_last_success_timestamp_seconds",
            "Unix time the last successful sync pass ended (alert on its age).",
            ["source"],
            registry=reg,
        )
        self.loop_lag = Gauge(
            "sync_agent_event_loop_lag_seconds",
            "How late the watchdog tick ran: a measure of event-loop stalls.",
            registry=reg,
        )
        self.poll_interval = Gauge(
            "sync_agent_poll_interval_seconds",
            "The configured poll interval of a source (alert on N x this without success).",
            ["source"],
            registry=reg,
        )
        self.mirror_free = Gauge(
            "sync_agent_mirror_free_bytes",
            "Free bytes on the mirror's file system, read at each scrape.",
            registry=reg,
        )
        self.min_free_space = Gauge(
            "sync_agent_min_free_space_bytes",
            "min_free_space: below it the free-space guard holds every download.",
            registry=reg,
        )
        self.webhook_deliveries = Counter(
            "sync_agent_webhook_deliveries",
            "Webhook delivery attempts, by outcome: delivered, failed (tried again later), "
            "gave_up (the retry schedule ran out), gone (410: the endpoint is disabled).",
            ["endpoint", "outcome"],
            registry=reg,
        )
        self.webhook_oldest_pending = Gauge(
            "sync_agent_webhook_oldest_pending_seconds",
            "Age of the oldest change not yet delivered to a webhook endpoint (0: caught up).",
            ["endpoint"],
            registry=reg,
        )
        # Which replica this process is: join it onto any series by the scrape's instance
        # (a label on every series would only repeat what the target labels already say).
        self.replica = Info(
            "sync_agent_replica", "This replica of the agent: its id, host and pid.", registry=reg
        )

    def observe_pass(self, source: str, seconds: float, ok: bool) -> None:
        """Record one finished pass: its duration, when it ended and whether it succeeded."""
        now = self._clock()
        self.pass_duration.labels(source).observe(max(seconds, 0.0))
        self.last_pass.labels(source).set(now)
        self.last_pass_success.labels(source).set(1 if ok else 0)
        if ok:
            self.last_success.labels(source).set(now)

    def add_download(self, source: str, nbytes: int, *, files: int = 1) -> None:
        """Count bytes received; `files` is how many files this completed (0 for a chunk)."""
        if nbytes > 0:
            self.downloaded_bytes.labels(source).inc(nbytes)
        if files > 0:
            self.downloaded_files.labels(source).inc(files)

    def add_failure(self, source: str, kind: str) -> None:
        self.failures.labels(source, kind).inc()
        self._kinds.setdefault(source, set()).add(kind)

    def set_documents(self, source: str, counts: Mapping[str, int]) -> None:
        """Replace the per-state counts; states seen before but absent now drop to 0."""
        seen = self._states.setdefault(source, set())
        for state in seen - counts.keys():
            self.documents.labels(source, state).set(0)
        for state, count in counts.items():
            self.documents.labels(source, state).set(count)
        seen.update(counts)

    def set_queue_depth(self, n: int) -> None:
        self.queue_depth.set(n)

    def add_rate_wait(self, source: str, seconds: float) -> None:
        if seconds > 0:
            self.rate_wait.labels(source).inc(seconds)

    def set_loop_lag(self, seconds: float) -> None:
        self.loop_lag.set(max(seconds, 0.0))

    def set_poll_interval(self, source: str, seconds: float) -> None:
        self.poll_interval.labels(source).set(seconds)

    def watch_free_space(self, free_bytes: Callable[[], int], minimum: int) -> None:
        """Report `free_bytes()` at each scrape beside the guard's threshold `minimum`."""
        self.mirror_free.set_function(lambda: float(free_bytes()))
        self.min_free_space.set(minimum)

    def webhook_attempt(self, endpoint: str, outcome: str) -> None:
        self.webhook_deliveries.labels(endpoint, outcome).inc()

    def webhook_pending(self, endpoint: str, seconds: float) -> None:
        self.webhook_oldest_pending.labels(endpoint).set(max(seconds, 0.0))

    def set_replica(self, replica_id: str, host: str, pid: int) -> None:
        self.replica.info({"replica": replica_id, "host": host, "pid": str(pid)})

    def remove_source(self, source: str) -> None:
        """Drop every series of a source that left the configuration (after a reload)."""
        for state in self._states.pop(source, set()):
            self.documents.remove(source, state)
        for metric in (
            self.downloaded_bytes,
            self.downloaded_files,
            self.pass_duration,
            self.rate_wait,
            self.last_pass,
            self.last_pass_success,
            self.last_success,
            self.poll_interval,
        ):
            metric.remove(source)  # a no-op for a label set never used
        for kind in self._kinds.pop(source, set()):
            self.failures.remove(source, kind)

    def render(self) -> bytes:
        """The registry in the Prometheus text exposition format."""
        return generate_latest(self.registry)
