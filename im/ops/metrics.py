"""Domain-side Prometheus metrics of one node: what was stored, delivered, and how long pulls take.

Each node (each :class:`~im.service.MessagingService`) owns a private ``CollectorRegistry`` instead of
prometheus-client's global one: tests and benchmarks run several nodes in one process, and a global
registry refuses the second registration of a name. Gauges that describe live state (connections by
transport, waiting long-polls, webhook queue depth) are read at scrape time from the objects that hold
that state, so the hot paths pay nothing for them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["LATENCY_BUCKETS_SECS", "Metrics"]

# From a cached pull on loopback (~1 ms) to a store stalling towards its timeout (10 s).
LATENCY_BUCKETS_SECS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# Live state read at scrape time: name -> (help, () -> {label value: number}).
GaugeSource = Callable[[], dict[str, float]]


class _LiveGauges(Collector):
    """Gauges computed when scraped, from callbacks registered by the parts that own the state."""

    def __init__(self) -> None:
        self._sources: list[tuple[str, str, str, GaugeSource]] = []

    def add(self, name: str, documentation: str, label: str, source: GaugeSource) -> None:
        self._sources.append((name, documentation, label, source))

    def collect(self) -> Iterable[GaugeMetricFamily]:
        for name, documentation, label, source in self._sources:
            values = source()
            if label:
                family = GaugeMetricFamily(name, documentation, labels=[label])
                for key, value in sorted(values.items()):
                    family.add_metric([key], value)
            else:
                family = GaugeMetricFamily(name, documentation, value=sum(values.values()))
            yield family

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return []  # names are only known once sources are added; no clash checks needed


class Metrics:
    """The counters and histograms the service updates, plus the scrape-time gauges."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.messages_stored = Counter(
            "im_messages_stored_total", "Messages durably stored (first writes)", registry=r)
        self.duplicate_sends = Counter(
            "im_duplicate_sends_total", "Sends answered with an earlier receipt (same client_msg_id)",
            registry=r)
        self.inbox_entries_written = Counter(
            "im_inbox_entries_written_total", "Inbox entries written (one per recipient of a message)",
            registry=r)
        self.messages_delivered = Counter(
            "im_messages_delivered_total", "Inbox entries handed to clients by pulls and long-polls",
            registry=r)
        self.pull_seconds = Histogram("im_pull_seconds", "Time to serve one inbox pull",
                                      buckets=LATENCY_BUCKETS_SECS, registry=r)
        self.ack_seconds = Histogram("im_ack_seconds", "Time to record one acknowledgement (and trim)",
                                     buckets=LATENCY_BUCKETS_SECS, registry=r)
        self.commit_seconds = Histogram(
            "im_commit_seconds", "Time to write one group-commit batch (one store transaction)",
            buckets=LATENCY_BUCKETS_SECS, registry=r)
        self.commit_batch_messages = Histogram(
            "im_commit_batch_messages", "Messages per group-commit batch",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512), registry=r)
        self.http_request_seconds = Histogram(
            "im_http_request_seconds", "HTTP request time by handler and status class",
            ["handler", "status"], buckets=LATENCY_BUCKETS_SECS, registry=r)
        self.webhook_deliveries = Counter("im_webhook_deliveries_total",
                                          "Webhook POST outcomes: ok, retry, failed, dropped", ["outcome"],
                                          registry=r)
        self.sends_refused = Counter(
            "im_sends_refused_total",
            "Client sends refused as overloaded (503), by reason: queue_full, queue_wait",
            ["reason"], registry=r)
        self._live = _LiveGauges()
        r.register(self._live)

    def gauge(self, name: str, documentation: str, source: GaugeSource, *, label: str = "") -> None:
        """Register a gauge read from ``source()`` at scrape time (a dict of label value -> number;
        without ``label`` the values are summed into one number)."""
        self._live.add(name, documentation, label, source)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric of this node."""
        return generate_latest(self.registry)
