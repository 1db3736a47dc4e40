"""How much each benchmark does: the full run and the ``--quick`` smoke run."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Settings:
    messages: int
    """N: messages per path and phase (latency phase and throughput phase each)."""
    rounds: int
    """The phases are split into this many rounds, interleaving the paths against drift."""
    window: int
    """Messages in flight during the throughput phase (closed loop)."""
    warmup: int
    """Unmeasured messages per path before the first round."""
    burst_portals: int
    burst_messages: int
    scale_portals: int
    scale_ghosts: int
    scale_starts: int
    """Bridge starts per store; the median start-up time is reported."""
    roundtrip_messages: int
    encryption_messages: int
    """N per path and phase of the encryption comparison (four paths on their own bridge)."""
    quick: bool = False


FULL = Settings(
    messages=500,
    rounds=5,
    window=8,
    warmup=10,
    burst_portals=50,
    burst_messages=100,
    scale_portals=10_000,
    scale_ghosts=100_000,
    scale_starts=3,
    roundtrip_messages=30,
    encryption_messages=300,
)

QUICK = Settings(
    messages=40,
    rounds=2,
    window=8,
    warmup=5,
    burst_portals=10,
    burst_messages=20,
    scale_portals=10_000,
    scale_ghosts=100_000,
    scale_starts=1,
    roundtrip_messages=10,
    encryption_messages=20,
    quick=True,
)
