"""Latency and throughput of several paths, interleaved round by round in the same run."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

from bench.driver import Run, closed_loop
from bench.paths import MessagePath
from bench.procfs import CpuMeter
from bench.results import PathResult
from bench.settings import Settings
from bench.stats import Latency

log = logging.getLogger("bench")


@dataclass
class _Tally:
    path: MessagePath
    bridge: CpuMeter
    synapse: CpuMeter
    prosody: CpuMeter | None
    single: list[Run] = field(default_factory=list)
    loaded: list[Run] = field(default_factory=list)

    @contextmanager
    def measure(self) -> Iterator[None]:
        """CPU of every process metered, around one phase."""
        with ExitStack() as stack:
            for meter in (self.bridge, self.synapse, self.prosody):
                if meter is not None:
                    stack.enter_context(meter.measure())
            yield

    def result(self) -> PathResult:
        runs = self.single + self.loaded
        return PathResult(
            key=self.path.key,
            label=self.path.label,
            latency=Latency(tuple(x for run in self.single for x in run.latencies)),
            loaded=Latency(tuple(x for run in self.loaded for x in run.latencies)),
            throughput_messages=sum(run.messages for run in self.loaded),
            throughput_seconds=sum(run.seconds for run in self.loaded),
            messages=sum(run.messages for run in runs),
            seconds=sum(run.seconds for run in runs),
            bridge_cpu=self.bridge.seconds,
            synapse_cpu=self.synapse.seconds,
            prosody_cpu=None if self.prosody is None else self.prosody.seconds,
        )


async def measure_paths(
    paths: Sequence[MessagePath],
    settings: Settings,
    *,
    bridge_pid: int,
    synapse_pid: int,
    prosody_pid: int | None = None,
) -> list[PathResult]:
    """Per round, each path sends its share of N with one message in flight (latency), then
    with ``settings.window`` in flight (throughput). Prosody's CPU is metered for every path
    when ``prosody_pid`` is given (it idles through the paths that do not use it). A path with
    ``bridge_pid`` or ``synapse_pid`` attributes of its own (the encryption comparison's, whose
    bridges and Synapses are others) is metered on those processes instead."""
    tallies = [
        _Tally(
            p,
            CpuMeter(getattr(p, "bridge_pid", None) or bridge_pid),
            CpuMeter(getattr(p, "synapse_pid", None) or synapse_pid),
            None if prosody_pid is None else CpuMeter(prosody_pid),
        )
        for p in paths
    ]
    for tally in tallies:
        tokens = [f"bench {tally.path.key} warmup {i}" for i in range(settings.warmup)]
        await closed_loop(tally.path.send, tally.path.arrivals, tokens, window=1)
    per_round = max(1, settings.messages // settings.rounds)
    for round_no in range(settings.rounds):
        for tally in tallies:
            for phase, window, runs in (
                ("single", 1, tally.single),
                ("loaded", settings.window, tally.loaded),
            ):
                key = tally.path.key
                tokens = [f"bench {key} r{round_no} {phase} {i}" for i in range(per_round)]
                with tally.measure():
                    run = await closed_loop(
                        tally.path.send, tally.path.arrivals, tokens, window=window
                    )
                runs.append(run)
                log.info(
                    "round %d %-14s %-6s %4d msgs in %5.2f s (%.0f msg/s)",
                    round_no + 1,
                    key,
                    phase,
                    run.messages,
                    run.seconds,
                    run.messages / run.seconds,
                )
    return [tally.result() for tally in tallies]
