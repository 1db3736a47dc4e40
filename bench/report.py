"""Rendering a run as ``docs/benchmarks.md``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.machine import Machine
from bench.paths.email import NOTE as EMAIL_NOTE
from bench.paths.encryption import NOTE as ENCRYPTION_NOTE
from bench.paths.pending import PENDING
from bench.paths.reference import NOTE as REFERENCE_NOTE
from bench.paths.teams import NOTE as TEAMS_NOTE
from bench.paths.xmpp import NOTE as XMPP_NOTE
from bench.pgwire import Tally
from bench.results import (
    BurstResult,
    EncryptionResult,
    PathResult,
    RoundTripResult,
    Skipped,
    StartupResult,
    added_cpu_ms,
)
from bench.settings import Settings
from bench.targets import (
    MAX_ENCRYPTION_ADDED_CPU_MS,
    Check,
    added_ms,
    encryption_target_met,
    evaluate,
    throughput_ratio,
)


@dataclass
class Report:
    date: str
    command: str
    seconds: float
    machine: Machine
    settings: Settings
    baseline: PathResult
    bridged: list[PathResult]
    bridge_idle_cpu_ms_per_s: float
    """Bridge CPU while only the baseline ran (the bridge had nothing to do)."""
    bridge_peak_rss_mb: float
    burst: BurstResult | None = None
    startups: list[StartupResult] = field(default_factory=list)
    round_trips: list[RoundTripResult] = field(default_factory=list)
    idle_tally: Tally | None = None
    skipped: list[Skipped] = field(default_factory=list)
    profile: str | None = None
    """Markdown of the profile section, when the run was profiled."""
    encryption: EncryptionResult | None = None

    def checks(self) -> list[Check]:
        return evaluate(self.baseline, self.bridged, self.burst, self.startups, self.encryption)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _ms(seconds: float) -> str:
    return f"{1000 * seconds:.1f} ms"


def _machine(m: Machine) -> str:
    return _table(
        ["", ""],
        [
            ["CPU", f"{m.cpus} x {m.cpu_model}"],
            ["Memory", f"{m.memory_gb:.1f} GB"],
            ["OS", f"{m.os} (Linux {m.kernel})"],
            ["Python", m.python],
            ["Synapse", f"{m.synapse} on SQLite"],
            ["PostgreSQL", m.postgres],
            ["Pontis", f"git {m.pontis}"],
        ],
    )


def _targets(checks: Sequence[Check]) -> str:
    rows = [[c.target, c.subject, c.measured, "met" if c.met else "**MISSED**"] for c in checks]
    missed = sum(not c.met for c in checks)
    summary = (
        f"{len(checks) - missed} of {len(checks)} targets met; **{missed} missed**."
        if missed
        else f"All {len(checks)} targets met."
    )
    return summary + "\n\n" + _table(["Target", "Where", "Measured", "Result"], rows)


def _latency(r: Report) -> str:
    s = r.settings
    rows = []
    for p in [r.baseline, *r.bridged]:
        is_base = p is r.baseline
        rows.append(
            [
                p.label,
                str(p.latency.count),
                _ms(p.latency.p50),
                _ms(p.latency.p99),
                f"{p.rate:.1f}",
                _ms(p.loaded.p50),
                "—" if is_base else f"{added_ms(p, r.baseline, 50):+.1f} ms",
                "—" if is_base else f"{added_ms(p, r.baseline, 99):+.1f} ms",
                "—" if is_base else f"{throughput_ratio(p, r.baseline):.0%}",
            ]
        )
    rows += [[p.label, "—", "—", "—", "—", "—", "—", "—", p.reason] for p in PENDING]
    header = [
        "Path",
        "N",
        "p50",
        "p99",
        f"msg/s ({s.window} in flight)",
        f"p50 ({s.window} in flight)",
        "added p50",
        "added p99",
        "throughput vs baseline",
    ]
    return (
        f"Reference network rows: {REFERENCE_NOTE}. XMPP rows: {XMPP_NOTE}. Mail rows: "
        f"{EMAIL_NOTE}. Teams rows: {TEAMS_NOTE}.\n\n"
        + _table(header, rows)
        + "\n\n"
        + f"Latency (p50, p99) is measured with one message in flight, from just before the send "
        f"(the Matrix `PUT /send` request, the reference network's push, the XMPP client's "
        f"stanza write, the first LMTP or SMTP command of a mail) to the moment the receiving "
        f"side has it: the recipient's `/sync` response, the reference network's HTTP handler, "
        f"the XMPP client's stanza handler, or the end of `DATA` at the SMTP sink. "
        f"Throughput is measured separately with {s.window} "
        f"messages in flight (closed loop), from the first send to the last arrival. Each path "
        f"sends N messages per phase, split into {s.rounds} rounds that interleave the paths, "
        f"after {s.warmup} unmeasured warm-up messages. *Added* latency is the path's "
        f"percentile minus the baseline's."
    )


def _prosody_ms(p: PathResult) -> str:
    cpu = p.prosody_cpu_ms_per_message
    return "—" if cpu is None else f"{cpu:.2f} ms"


def _cost(r: Report) -> str:
    rows = []
    for p in [r.baseline, *r.bridged]:
        rows.append(
            [
                p.label,
                str(p.messages),
                "(idle)" if p is r.baseline else f"{p.bridge_cpu_ms_per_message:.2f} ms",
                f"{p.synapse_cpu_ms_per_message:.1f} ms",
                _prosody_ms(p),
            ]
        )
    if r.burst is not None:
        b = r.burst
        rows.append(
            [
                f"Burst ({b.portals} x {b.per_portal}, reference network → Matrix)",
                str(b.delivered),
                f"{1000 * b.bridge_cpu / max(b.delivered, 1):.2f} ms",
                f"{1000 * b.synapse_cpu / max(b.delivered, 1):.1f} ms",
                "—",
            ]
        )
    header = ["Path", "Messages", "Bridge CPU / message", "Synapse CPU / message"]
    return (
        _table([*header, "Prosody CPU / message"], rows)
        + "\n\n"
        + f"CPU is user + system time from `/proc/<pid>/stat` of each process around the "
        f"measured phases, divided by the messages sent (10 ms clock ticks, so short runs are "
        f"coarse). Prosody's column is for information (no target); it is metered on every "
        f"path, and on the paths that do not use it shows what it spends idle. The XMPP client, "
        f"the LMTP client and the SMTP sink run in the benchmark process and are not metered; "
        f"neither is Postfix (its work is spread over short-lived daemons), so the Postfix "
        f"row's bridge CPU is comparable with the others but its Synapse-plus-bridge total is "
        f"not the whole cost. While only the baseline ran, the idle bridge used "
        f"{r.bridge_idle_cpu_ms_per_s:.1f} ms of CPU per second. Peak RSS (VmHWM) of the bridge "
        f"after the latency, throughput and burst runs: **{r.bridge_peak_rss_mb:.0f} MB**."
    )


def _scale(r: Report) -> str:
    rows = []
    for st in r.startups:
        rows.append(
            [
                st.backend,
                f"{st.portals:,}",
                f"{st.ghosts:,}",
                "—" if st.populate_seconds is None else f"{st.populate_seconds:.1f} s",
                f"{st.median_seconds:.2f} s",
                ", ".join(f"{x:.2f}" for x in st.seconds),
                f"{st.rss_mb:.0f} MB",
                f"{st.peak_rss_mb:.0f} MB",
            ]
        )
    text = (
        _table(
            [
                "Store",
                "Portals",
                "Ghosts",
                "Filled in",
                "Start-up (median)",
                "Each start (s)",
                "RSS when ready",
                "Peak RSS",
            ],
            rows,
        )
        + "\n\n"
        + "Start-up runs from spawning `python -m bridge -c config.yaml run` to `GET "
        "/_pontis/health` answering 200 (polled every 0.1 s), against the running Synapse; it "
        "includes interpreter start, imports, opening the store, the homeserver and bot checks, "
        "starting the connectors (reference, XMPP and email; the XMPP component's handshake "
        "with Prosody and the email relay check finish in the background, after ready) and the appservice ping. Peak RSS is VmHWM a few seconds after "
        "ready. The store is filled with batched `executemany` into the schema the bridge's own "
        "migrations created."
    )
    if r.round_trips:
        text += "\n\n### Database round trips per bridged message (PostgreSQL)\n\n" + _round_trips(
            r
        )
    return text


def _round_trips(r: Report) -> str:
    rows = [
        [
            rt.direction,
            str(rt.messages),
            f"{rt.per_message:.1f}",
            f"{rt.statements_per_message:.1f}",
            f"{rt.pool_resets_per_message:.1f}",
        ]
        for rt in r.round_trips
    ]
    header = ["Direction", "Messages", "Round trips / message", "Statements / message"]
    text = _table([*header, "of which pool resets"], rows)
    idle = r.idle_tally.round_trips if r.idle_tally is not None else 0
    text += (
        "\n\nCounted on the wire: the bridge ran on the filled PostgreSQL store through a "
        "counting TCP proxy (`bench/pgwire.py`) that reads the client side of the PostgreSQL "
        "protocol. A round trip is a `Sync` or a simple `Query` message (each makes the client "
        "wait for the server); a statement is an `Execute` or a `Query`. Messages were sent "
        "one at a time after warm-up (asyncpg's statement cache full); round trips the idle "
        f"bridge makes in the same time are subtracted (idle: {idle} in 5 s). *Pool resets* "
        "are asyncpg's `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;`, "
        "which it runs whenever a connection goes back to the pool, i.e. after every store call "
        "that acquired one. SQLite runs the same statements in-process, each a hop to "
        "aiosqlite's worker thread.\n"
    )
    for rt in r.round_trips:
        text += f"\n{rt.direction}, statements per message:\n\n"
        text += _table(
            ["Per message", "Statement"],
            [[f"{n:.2f}", f"`{sql[:120]}`"] for sql, n in list(rt.by_statement.items())[:30]],
        )
        text += "\n"
    return text


def _burst(r: Report) -> str:
    b = r.burst
    if b is None:
        return "Not run."
    order = (
        "order kept in every portal"
        if not b.out_of_order_portals
        else f"**order broken in {len(b.out_of_order_portals)} portals**"
    )
    return (
        f"{b.portals} portals x {b.per_portal} messages pushed from the reference network at "
        f"once (round-robin over the portals), each portal with its own sender. The baseline "
        f"rate is the Matrix-to-Matrix throughput phase above ({r.settings.window} in flight)."
        f"\n\n"
        + _table(
            [
                "Delivered",
                "Order",
                "Total time",
                "msg/s",
                "Baseline msg/s",
                "vs baseline",
                "Bridge peak RSS",
            ],
            [
                [
                    f"{b.delivered} of {b.expected}",
                    order,
                    f"{b.seconds:.1f} s",
                    f"{b.rate:.1f}",
                    f"{r.baseline.rate:.1f}",
                    f"{b.rate / r.baseline.rate:.0%}",
                    f"{b.bridge_peak_rss_mb:.0f} MB",
                ]
            ],
        )
    )


def _encryption(r: Report) -> str:
    e = r.encryption
    if e is None:
        return "Not run."
    s = r.settings
    measured = _table(
        ["Path", "Messages", "p50", f"msg/s ({s.window} in flight)", "Bridge CPU / message",
         "Synapse CPU / message"],
        [[p.label, str(p.messages), _ms(p.latency.p50), f"{p.rate:.1f}",
          f"{p.bridge_cpu_ms_per_message:.2f} ms", f"{p.synapse_cpu_ms_per_message:.1f} ms"]
         for p in e.paths()],
    )  # fmt: skip
    rows = []
    for direction, off, plain, encrypted in e.directions():
        added = added_cpu_ms(off, encrypted)
        rows.append(
            [direction, f"{off.bridge_cpu_ms_per_message:.2f} ms",
             f"{plain.bridge_cpu_ms_per_message:.2f} ms",
             f"{encrypted.bridge_cpu_ms_per_message:.2f} ms", f"**{added:+.2f} ms**",
             f"{added_cpu_ms(plain, encrypted):+.2f} ms",
             "met" if encryption_target_met(added) else "**MISSED**"]
        )  # fmt: skip
    difference = _table(
        ["Bridge CPU / message", "Encryption off", "Encryption on, unencrypted portal",
         "Encryption on, encrypted portal", "Added: encrypted vs off", "encrypted vs unencrypted portal",
         f"Target ≤ +{MAX_ENCRYPTION_ADDED_CPU_MS:g} ms"],
        rows,
    )  # fmt: skip
    idle_off, idle_on = e.bridge_idle_cpu_ms_per_s
    rss_off, rss_on = e.bridge_peak_rss_mb
    text = (
        f"Rows: {ENCRYPTION_NOTE}. The six paths were measured together, {s.rounds} "
        f"interleaved rounds of N = {e.off_in.latency.count} per path and phase (one message "
        f"in flight, then {s.window}), after {s.warmup} warm-up messages each; every message "
        f"of the encrypted portal reached the Matrix client as `m.room.encrypted`, none of the "
        f"others did (checked). The target is on the encrypted portal against encryption off: "
        f"what turning encryption on costs a message.\n\n"
        + difference
        + "\n\n"
        + measured
        + "\n\n"
        + "In the encrypted portal the bridge Megolm-encrypts each network message with its bot "
        "device and sends it as the ghost, and decrypts each Matrix message in the router "
        "before routing it; new sessions (every 100 messages and at start, both ways) add "
        "Olm-encrypted to-device key shares, which are part of the figures. The unencrypted "
        "portal of the bridge with encryption on carries what encryption costs every message "
        "of such a bridge whether or not its room is encrypted (the transactions' device-list "
        "and one-time-key data, the encryption check before each send). Latencies include "
        "nio's own encryption and decryption in the benchmark process. CPU is metered as in "
        f"section 3, each path on its own bridge and Synapse. Idle just before, the bridges "
        f"used {idle_off:.1f} (off) and {idle_on:.1f} (on) ms of CPU per second; peak RSS "
        f"{rss_off:.0f} and {rss_on:.0f} MB."
    )
    if e.profile:
        text += "\n\n### Profile\n\n" + e.profile
    return text


def render(r: Report) -> str:
    s = r.settings
    parts = [
        "# Benchmarks",
        f"Generated by `{r.command}` on {r.date} in {r.seconds / 60:.1f} minutes"
        + (" (**quick smoke run**: small N, not for comparison)" if s.quick else "")
        + ". Do not edit by hand: rerun the command (`scripts/bench.sh --help` lists options). "
        "Benchmarks are not part of the test suite.",
        "## Machine\n\n" + _machine(r.machine),
        "## Targets\n\n" + _targets(r.checks()),
        "## 1-2. Latency and throughput against the homeserver alone\n\n" + _latency(r),
        "## 3. Cost per message\n\n" + _cost(r),
        f"## 4. Scale: {s.scale_portals:,} portals and {s.scale_ghosts:,} ghosts\n\n" + _scale(r),
        "## 5. Burst\n\n" + _burst(r),
        "## 6. Encryption: CPU per message on and off\n\n" + _encryption(r),
    ]
    if r.profile:
        parts.append("## Profile\n\n" + r.profile)
    if r.skipped:
        parts.append(
            "## Not measured in this run\n\n"
            + "\n".join(f"- {sk.what}: {sk.reason}" for sk in r.skipped)
        )
    parts.append(
        "## How to read this\n\n"
        "- Everything runs on one machine: Synapse (on SQLite), Prosody, Postfix and Dovecot, "
        "the bridge, PostgreSQL and the benchmark driver (Matrix clients, the XMPP client, "
        "the LMTP client, the SMTP sink and the in-process reference network) share the "
        "cores. Synapse spends far more CPU per message than the bridge, so it is the "
        "bottleneck for throughput; ratios against the baseline measured in the same run are "
        "what carry over to other machines, not absolute numbers.\n"
        "- The reference network answers at once and in-process, so its rows measure what the "
        "hub core adds (appservice transaction, durable inbox, router, portal store, Matrix "
        "API calls). Real connectors add their own protocol costs on top.\n"
        "- Reference network → Matrix does the baseline's Synapse work (one send, one `/sync` "
        "to the recipient) plus the bridge. Matrix → reference network starts like the "
        "baseline but ends with Synapse's appservice transaction to the bridge and the "
        "bridge's call to the network instead of the recipient's `/sync`, so its added "
        "latency compares two different last legs and can even be negative.\n"
        "- The XMPP rows are the same two shapes with a real protocol stack instead of the "
        "reference network: XMPP → Matrix adds the client's c2s stream, Prosody's routing to "
        "the component and the connector's stanza parsing; Matrix → XMPP ends with the "
        "component stream, Prosody's delivery to the client and slixmpp's parsing in the "
        "benchmark process. The XMPP client shares the benchmark's event loop with the Matrix "
        "clients, as the reference network does.\n"
        "- The mail rows are the same two shapes again. Mail in over LMTP is timed from the "
        "client's `MAIL FROM` and includes MIME parsing, sender verification, the parent "
        "lookup for the thread and the bridge's wait for the homeserver before its `250`; "
        "through Postfix it also includes the SMTP submission, Postfix's queue and its LMTP "
        "delivery (a new connection per mail). Matrix → mail out ends at the relay: composing "
        "the MIME mail and `RSET`, `MAIL`, `RCPT`, `DATA` on an SMTP session to the sink "
        "that the bridge keeps open between mails, instead of the recipient's `/sync`."
    )
    return "\n\n".join(parts) + "\n"
