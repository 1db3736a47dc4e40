"""Prometheus metrics, on a registry owned by the app (no process globals)."""

from __future__ import annotations

import platform
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)

from bridge import __version__

if TYPE_CHECKING:
    from bridge.portal.backlog import Backlog

DIRECTIONS = ("matrix_to_network", "network_to_matrix")


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
        self.pending = Gauge(
            "pontis_pending_events",
            "Events accepted durably and not yet delivered, by direction and network"
            " (matrix_to_network: the portal's network, empty for rooms that are not portals)",
            ["direction", "network"],
            registry=self.registry,
        )
        self.oldest_pending = Gauge(
            "pontis_oldest_pending_seconds",
            "Age of the oldest event accepted and not yet delivered, by direction and network;"
            " 0 when nothing waits",
            ["direction", "network"],
            registry=self.registry,
        )
        self.dead_letters_kept = Gauge(
            "pontis_dead_letters_kept",
            "Dead letters in the database (not yet retried, dropped or pruned),"
            " by direction and network",
            ["direction", "network"],
            registry=self.registry,
        )
        self.dependency_reachable = Gauge(
            "pontis_dependency_reachable",
            "1 when the dependency answered the bridge's last probe, 0 when it did not"
            " (homeserver, database: as /_pontis/health reports them)",
            ["dependency"],
            registry=self.registry,
        )
        Info(
            "pontis_build",
            "Version of the running bridge (from the installed package) and of its Python",
            registry=self.registry,
        ).info({"version": __version__, "python": platform.python_version()})
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)

    def show_dependencies(self, reachable: Mapping[str, bool | None]) -> None:
        """Set ``pontis_dependency_reachable`` from the health probes (dependency name →
        reachable); one not probed yet (None) gets no series until it is."""
        for dependency, ok in reachable.items():
            if ok is not None:
                self.dependency_reachable.labels(dependency).set(int(ok))

    def show_backlog(self, backlog: Backlog, networks: Iterable[str], now_ms: int) -> None:
        """Set the backlog gauges from ``backlog``; every network in ``networks`` gets a series
        in each direction (0 when nothing waits), so that alerts need no ``absent()``."""
        for gauge in (self.pending, self.oldest_pending, self.dead_letters_kept):
            gauge.clear()
        for direction in DIRECTIONS:
            for network in networks:
                self.pending.labels(direction, network).set(0)
                self.oldest_pending.labels(direction, network).set(0)
                self.dead_letters_kept.labels(direction, network).set(0)
        for direction, pending in zip(
            DIRECTIONS, (backlog.to_network, backlog.to_matrix), strict=True
        ):
            for network, item in pending.items():
                self.pending.labels(direction, network).set(item.count)
                age = 0.0 if item.oldest_ms is None else max(0, now_ms - item.oldest_ms) / 1000
                self.oldest_pending.labels(direction, network).set(age)
        for (direction, network), count in backlog.dead_letters.items():
            self.dead_letters_kept.labels(direction, network).set(count)
        self.inbox_depth.set(sum(item.count for item in backlog.to_network.values()))
