"""Prometheus metrics, on a registry owned by the app (no process globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.transactions = Counter(
            "pontis_appservice_transactions",
            "Appservice transactions received, by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.echoes_dropped = Counter(
            "pontis_echoes_dropped",
            "The bridge's own events coming back from the homeserver, dropped before storing",
            registry=self.registry,
        )
        self.matrix_events = Counter(
            "pontis_matrix_events",
            "Matrix events processed, by event type, network and outcome",
            ["type", "network", "outcome"],
            registry=self.registry,
        )
        self.remote_events = Counter(
            "pontis_remote_events",
            "Remote events processed, by network, kind and outcome",
            ["network", "kind", "outcome"],
            registry=self.registry,
        )
        self.inbox_depth = Gauge(
            "pontis_inbox_depth",
            "Matrix events stored in the inbox and not yet processed",
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "pontis_dead_letters",
            "Events given up on after retries and parked in the dead-letter table",
            ["network"],
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "pontis_queue_wait_seconds",
            "Time an event waited in its portal queue before processing started",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30),
            registry=self.registry,
        )
        self.errors = Counter(
            "pontis_errors",
            "Errors by component and kind",
            ["component", "kind"],
            registry=self.registry,
        )
        self.client_state = Gauge(
            "pontis_client_connected",
            "1 when a network client is connected, 0 otherwise",
            ["network", "login"],
            registry=self.registry,
        )
