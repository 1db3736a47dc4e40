"""What each XEP-0114 component stream of the hub is doing now, for the operator (issue #14):
connected or not and since when, the last error, when the next attempt comes.

:class:`Link` is written by the component as its stream comes and goes (component.py) and read
when ``/_pontis/health`` is asked (``client_details``, through the core's
``SupportsHealthDetail``) or ``/metrics`` is scraped (:class:`LinkMetrics`), so both say what is
true at that moment, not what it was at the last state change. Nothing here holds the secret:
errors are redacted before they are kept (:func:`redact`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

MAX_ERROR = 300
"""Characters of an error kept: a server's stream error text is not ours to bound."""


def redact(text: str, secret: str) -> str:
    """``text`` without ``secret`` in it (a server or a library may echo what it was given)."""
    if secret:
        text = text.replace(secret, "***")
    return text[:MAX_ERROR]


def _iso(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(slots=True)
class Link:
    """One component stream. Times are wall-clock seconds (they are shown as dates)."""

    domain: str
    connected: bool = False
    since: float | None = None
    """When ``connected`` last changed, or the first attempt began; None before it."""
    error: str | None = None
    """Why the stream is not up (the last failure); None while up or before any failure."""
    next_attempt: float | None = None
    failures: int = 0
    """Attempts that failed in a row."""

    def starting(self, now: float) -> None:
        if self.since is None:
            self.since = now

    def up(self, now: float) -> None:
        if not self.connected:
            self.since = now
        self.connected, self.error, self.next_attempt, self.failures = True, None, None, 0

    def down(self, now: float, error: str, retry_in: float | None = None) -> None:
        """An attempt failed or the stream closed; the next attempt in ``retry_in`` seconds if
        known now (else :meth:`retry_at` tells it later)."""
        if self.connected or self.since is None:
            self.since = now
        self.connected, self.error = False, error
        self.failures += 1
        self.next_attempt = None if retry_in is None else now + retry_in

    def retry_at(self, now: float, retry_in: float) -> None:
        self.next_attempt = now + retry_in

    def stopped(self, now: float) -> None:
        if self.connected:
            self.since = now
        self.connected, self.next_attempt = False, None

    def as_json(self, now: float) -> dict[str, Any]:
        body: dict[str, Any] = {"domain": self.domain, "connected": self.connected}
        if self.since is not None:
            body["since"] = _iso(self.since)
        if self.error is not None:
            body["error"] = self.error
            body["failed_attempts"] = self.failures
        if self.next_attempt is not None and self.next_attempt > now:
            body["next_attempt"] = _iso(self.next_attempt)
            body["next_attempt_in_seconds"] = round(self.next_attempt - now, 1)
        return body


class LinkMetrics(Collector):
    """``pontis_xmpp_component_connected{domain, serves}``: read from the links at each scrape.
    ``serves`` is ``users`` (Matrix users' JIDs) or ``rooms`` (Matrix rooms offered as MUCs)."""

    def __init__(self, links: Callable[[], Iterable[tuple[str, Link]]]) -> None:
        self._links = links

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily(
            "pontis_xmpp_component_connected",
            "1 while the XMPP component's stream with its server is up, 0 otherwise",
            labels=["domain", "serves"],
        )
        for serves, link in self._links():
            gauge.add_metric([link.domain, serves], int(link.connected))
        yield gauge
