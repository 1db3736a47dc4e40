"""What a benchmark run found; :mod:`bench.report` renders it."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.stats import Latency

POOL_RESET = "SELECT pg_advisory_unlock_all();"
"""How asyncpg's reset query, run when a connection goes back to its pool, begins."""


@dataclass
class PathResult:
    key: str
    label: str
    latency: Latency
    """One message in flight at a time."""
    loaded: Latency
    """``window`` messages in flight (the throughput phase)."""
    throughput_messages: int
    throughput_seconds: float
    messages: int
    seconds: float
    """Wall time of all measured phases of the path."""
    """Every measured message of the path, both phases."""
    bridge_cpu: float
    """Seconds of bridge CPU while the path's messages were measured."""
    synapse_cpu: float
    prosody_cpu: float | None = None
    """Seconds of Prosody CPU in the same phases, when Prosody ran."""

    @property
    def rate(self) -> float:
        """Messages per second in the throughput phase."""
        return self.throughput_messages / self.throughput_seconds

    @property
    def bridge_cpu_ms_per_message(self) -> float:
        return 1000 * self.bridge_cpu / self.messages

    @property
    def synapse_cpu_ms_per_message(self) -> float:
        return 1000 * self.synapse_cpu / self.messages

    @property
    def prosody_cpu_ms_per_message(self) -> float | None:
        return None if self.prosody_cpu is None else 1000 * self.prosody_cpu / self.messages


@dataclass
class BurstResult:
    portals: int
    per_portal: int
    delivered: int
    out_of_order_portals: list[str]
    seconds: float
    bridge_cpu: float
    synapse_cpu: float
    bridge_peak_rss_mb: float

    @property
    def expected(self) -> int:
        return self.portals * self.per_portal

    @property
    def rate(self) -> float:
        return self.delivered / self.seconds


@dataclass
class StartupResult:
    backend: str
    portals: int
    ghosts: int
    seconds: list[float]
    """Each start: process spawn to ``/_pontis/health`` answering 200 (polled every 0.1 s)."""
    rss_mb: float
    """VmRSS right after the last start became ready."""
    peak_rss_mb: float
    """VmHWM (peak resident set) of the last start, a few seconds after ready."""
    populate_seconds: float | None = None

    @property
    def median_seconds(self) -> float:
        ordered = sorted(self.seconds)
        return ordered[len(ordered) // 2]


@dataclass
class RoundTripResult:
    direction: str
    messages: int
    round_trips: int
    statements: int
    idle_round_trips: float
    """Round trips the bridge makes anyway in the same time (measured while idle), subtracted."""
    by_statement: dict[str, float] = field(default_factory=dict)
    """Statement text → executions per message."""

    @property
    def per_message(self) -> float:
        return (self.round_trips - self.idle_round_trips) / self.messages

    @property
    def statements_per_message(self) -> float:
        return self.statements / self.messages

    @property
    def pool_resets_per_message(self) -> float:
        return sum(n for sql, n in self.by_statement.items() if sql.startswith(POOL_RESET))


@dataclass
class Skipped:
    what: str
    reason: str


@dataclass
class EncryptionResult:
    """Both directions in three portals, interleaved in one measurement: one of a bridge with
    encryption off, an unencrypted and an encrypted one of a bridge with encryption on."""

    off_in: PathResult
    plain_in: PathResult
    encrypted_in: PathResult
    off_out: PathResult
    plain_out: PathResult
    encrypted_out: PathResult
    bridge_idle_cpu_ms_per_s: tuple[float, float]
    """The two bridges (encryption off, on), idle, just before the measurement."""
    bridge_peak_rss_mb: tuple[float, float]
    profile: str | None = None
    """Markdown of the encrypted paths' profile, when the run was profiled."""

    def paths(self) -> list[PathResult]:
        return [
            self.off_in, self.plain_in, self.encrypted_in,
            self.off_out, self.plain_out, self.encrypted_out,
        ]  # fmt: skip

    def directions(self) -> list[tuple[str, PathResult, PathResult, PathResult]]:
        """(direction, encryption off, unencrypted portal, encrypted portal)."""
        return [
            ("Reference network → Matrix user", self.off_in, self.plain_in, self.encrypted_in),
            ("Matrix user → reference network", self.off_out, self.plain_out, self.encrypted_out),
        ]


def added_cpu_ms(before: PathResult, after: PathResult) -> float:
    """Bridge CPU per message of ``after`` minus that of ``before``."""
    return after.bridge_cpu_ms_per_message - before.bridge_cpu_ms_per_message
