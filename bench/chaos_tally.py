"""Counting what a chaos run lost, duplicated and reordered, and rendering it as a section of
``docs/benchmarks.md``.

Pure functions over what :mod:`bench.chaos` recorded: the tokens each direction sent, in send
order, with what the sending side was told about each (acknowledged, refused), and the tokens
the receiving side saw, in arrival order, repeats kept.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

BEGIN = "<!-- chaos:begin -->"
END = "<!-- chaos:end -->"
QUIET_LIMIT = 90.0
"""Seconds without any new arrival after which a run stops waiting for what is missing."""
GIVE_UP = 300.0
"""Longest wait for the last messages after the last send."""
LISTED = 12
"""Message ids listed per finding; the count is always complete."""


@dataclass(frozen=True, slots=True)
class Kill:
    at: float
    """Seconds after the first send."""
    down: float
    """Seconds from the SIGKILL until the restarted bridge answered its health check."""
    sent: dict[str, int]
    """Messages each direction had sent when the bridge died."""


@dataclass
class DirectionRecord:
    key: str
    label: str
    sent: list[str] = field(default_factory=list)
    """Tokens in send order."""
    acknowledged: set[str] = field(default_factory=set)
    """Tokens the sending side was told were taken (receipt, 250, event id, 201)."""
    refused: set[str] = field(default_factory=set)
    """Tokens the sending side was refused at least once (error stanza, 4xx, 5xx)."""
    arrived: list[str] = field(default_factory=list)
    """Tokens in arrival order, repeats kept."""
    ack_meaning: str = ""
    sent_at: dict[str, float] = field(default_factory=dict)
    """Token → seconds after the first send of the run."""


@dataclass(frozen=True, slots=True)
class DirectionResult:
    key: str
    label: str
    ack_meaning: str
    sent: int
    acknowledged: int
    refused: int
    refused_arrived: int
    """Refused to the sender at least once, yet arrived (retried by the sender's network)."""
    lost: list[str]
    """Acknowledged to the sender, never arrived."""
    unconfirmed: list[str]
    """Neither acknowledged nor refused to the sender, never arrived: vanished without a sign
    but the missing acknowledgement."""
    duplicated: list[str]
    extra_copies: int
    reordered: list[str]
    """Arrived out of send order: not on a longest run of arrivals in send order."""
    reordered_unrefused: list[str]
    """The same among the messages that were never refused."""
    sent_at: dict[str, float]
    arrived_after: dict[str, str]
    """Reordered token → the token that arrived just before its first arrival."""

    @property
    def clean(self) -> bool:
        return not (self.lost or self.unconfirmed or self.duplicated or self.reordered)


def out_of_order(arrival_indices: Sequence[int]) -> set[int]:
    """The positions (in ``arrival_indices``) off one longest increasing subsequence: the fewest
    arrivals that must move for the rest to be in send order."""
    tails: list[int] = []  # tails[k]: position of the smallest tail of an increasing run of k+1
    previous: list[int] = [-1] * len(arrival_indices)
    for pos, value in enumerate(arrival_indices):
        k = bisect.bisect_left([arrival_indices[t] for t in tails], value)
        if k > 0:
            previous[pos] = tails[k - 1]
        if k == len(tails):
            tails.append(pos)
        else:
            tails[k] = pos
    keep: set[int] = set()
    pos = tails[-1] if tails else -1
    while pos >= 0:
        keep.add(pos)
        pos = previous[pos]
    return set(range(len(arrival_indices))) - keep


def _reordered(record: DirectionRecord, among: set[str]) -> list[str]:
    index = {token: i for i, token in enumerate(record.sent)}
    firsts: list[str] = []
    seen: set[str] = set()
    for token in record.arrived:
        if token in index and token in among and token not in seen:
            seen.add(token)
            firsts.append(token)
    moved = out_of_order([index[t] for t in firsts])
    return sorted((firsts[p] for p in moved), key=index.__getitem__)


def _arrived_after(arrived: Sequence[str], tokens: set[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for previous, token in zip(["(first)", *arrived], arrived, strict=False):
        if token in tokens and token not in found:
            found[token] = previous
    return found


def tally(record: DirectionRecord) -> DirectionResult:
    counts = Counter(record.arrived)
    arrived = set(counts)
    sent = set(record.sent)
    lost = [t for t in record.sent if t in record.acknowledged and t not in arrived]
    unconfirmed = [
        t
        for t in record.sent
        if t not in record.acknowledged and t not in record.refused and t not in arrived
    ]
    duplicated = [t for t in record.sent if counts[t] > 1]
    reordered = _reordered(record, sent)
    return DirectionResult(
        key=record.key,
        label=record.label,
        ack_meaning=record.ack_meaning,
        sent=len(record.sent),
        acknowledged=len(record.acknowledged & sent),
        refused=len(record.refused & sent),
        refused_arrived=len(record.refused & arrived),
        lost=lost,
        unconfirmed=unconfirmed,
        duplicated=duplicated,
        extra_copies=sum(counts[t] - 1 for t in duplicated),
        reordered=reordered,
        reordered_unrefused=_reordered(record, sent - record.refused),
        sent_at=dict(record.sent_at),
        arrived_after=_arrived_after(record.arrived, set(reordered)),
    )


@dataclass(frozen=True, slots=True)
class ChaosResult:
    date: str
    command: str
    revision: str
    seed: int
    messages: int
    interval: float
    kills: list[Kill]
    directions: list[DirectionResult]
    sending_seconds: float
    settle_seconds: float
    quiescent: bool
    """False when the run gave up waiting for the last messages."""
    skipped: list[str]


def _near(result: ChaosResult, sent_at: float | None) -> str:
    """The kill nearest to a send, and how long before (-) or after (+) it the send was."""
    if sent_at is None or not result.kills:
        return "no kill"
    number, kill = min(enumerate(result.kills, 1), key=lambda k: abs(k[1].at - sent_at))
    return f"kill {number} {sent_at - kill.at:+.2f} s"


def _ids(d: DirectionResult, tokens: Sequence[str], result: ChaosResult) -> str:
    def one(t: str) -> str:
        after = f", arrived after `{d.arrived_after[t]}`" if t in d.arrived_after else ""
        return f"`{t}` ({_near(result, d.sent_at.get(t))}{after})"

    shown = ", ".join(one(t) for t in tokens[:LISTED])
    return shown + (f" and {len(tokens) - LISTED} more" if len(tokens) > LISTED else "")


def _findings(result: ChaosResult) -> list[str]:
    lines = []
    for d in result.directions:
        for name, tokens in (("lost", d.lost), ("vanished unacknowledged", d.unconfirmed),
                             ("duplicated", d.duplicated), ("reordered", d.reordered)):  # fmt: skip
            if tokens:
                lines.append(f"- **{d.label}: {len(tokens)} {name}**: {_ids(d, tokens, result)}")
    return lines


def _verdict(result: ChaosResult) -> str:
    dirs = result.directions
    counts = {
        "lost": sum(len(d.lost) for d in dirs),
        "vanished": sum(len(d.unconfirmed) for d in dirs),
        "duplicated": sum(len(d.duplicated) for d in dirs),
        "reordered": sum(len(d.reordered) for d in dirs),
    }
    text = ", ".join(f"{n} {name}" for name, n in counts.items())
    unrefused = sum(len(d.reordered_unrefused) for d in dirs)
    if all(d.clean for d in dirs) and result.quiescent:
        return f"**Target met**: {text} in all six directions (target 0, 0, 0, 0)."
    verdict = f"**Target missed**: {text} in all six directions together (target 0, 0, 0, 0)."
    if counts["reordered"] and not unrefused:
        verdict += (
            " Every reordered message is one the sender's network was refused and retried "
            "later (reordered among messages never refused: 0)."
        )
    return verdict


def _bad(tokens: Sequence[str]) -> str:
    return f"**{len(tokens)}**" if tokens else "0"


def render(result: ChaosResult) -> str:
    rows = [
        f"| {d.label} | {d.sent} | {d.acknowledged} | {d.refused} | {d.refused_arrived} "
        f"| {_bad(d.lost)} | {_bad(d.unconfirmed)} | {_bad(d.duplicated)} | {_bad(d.reordered)} "
        f"| {len(d.reordered_unrefused)} |"
        for d in result.directions
    ]
    kills = [
        f"| {i} | {k.at:.1f} s | {k.down:.1f} s | "
        + ", ".join(f"{key} {n}" for key, n in k.sent.items())
        + " |"
        for i, k in enumerate(result.kills, 1)
    ]
    findings = _findings(result)
    verdict = _verdict(result)
    parts = [
        "## 7. Chaos: SIGKILL of the bridge under load\n",
        f"Generated by `{result.command}` on {result.date} (Pontis {result.revision}); "
        f"**seed {result.seed}** (`--seed {result.seed}` repeats the kill schedule; the timing "
        f"of the servers does not repeat exactly). Each direction sent {result.messages} "
        f"messages, one every {1000 * result.interval:.0f} ms, all six at once, while the bridge "
        f"process was SIGKILLed {len(result.kills)} times at random moments and restarted "
        f"after a random pause; sending took {result.sending_seconds:.0f} s, and the run then "
        f"waited {result.settle_seconds:.0f} s for quiescence"
        + (
            ""
            if result.quiescent
            else f" and stopped with messages still missing, after {QUIET_LIMIT:.0f} s without "
            f"a new arrival (or at its {GIVE_UP:.0f} s limit)"
        )
        + ".\n",
        verdict + "\n",
        "| Direction | sent | acknowledged | refused to the sender | refused, arrived later "
        "| lost | vanished unacknowledged | duplicated | reordered | reordered (never refused) |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "*Lost*: acknowledged to the sender, never arrived. *Vanished unacknowledged*: neither "
        "acknowledged nor refused, never arrived (the sender's only sign is the missing "
        "acknowledgement). *Duplicated*: arrived more "
        "than once. *Reordered*: the fewest messages that must move for the arrivals of the "
        "portal to be in send order; the last column counts only messages the sender's network "
        "was never refused, since a network that retries later (Postfix's deferred queue, "
        "Graph's notification retries) delivers them after newer ones by its own design. "
        "*Refused to the sender*: XMPP error stanza (Prosody bounces while the component is "
        "away; the client does not resend), Postfix `status=deferred` for the bridge's LMTP "
        "(Postfix retries; the benchmark flushes its queue), a notification the Graph emulator "
        "did not get `2xx` for, or a Matrix send the homeserver refused.",
        "",
        "What *acknowledged* means: "
        + "; ".join(f"{d.label}: {d.ack_meaning}" for d in result.directions)
        + ".\n",
        "| Kill | at | down | sent so far per direction |",
        "|---|---|---|---|",
        *kills,
        "",
    ]
    if findings:
        parts += [
            "### Findings\n",
            "Each message id with the kill nearest to its send: sent that long before (-) or "
            "after (+) the SIGKILL.\n",
            *findings,
            "",
        ]
    for note in result.skipped:
        parts.append(f"- Skipped: {note}")
    return "\n".join(parts).rstrip() + "\n"


def splice(document: str, section: str) -> str:
    """``document`` with its chaos section (between the markers) replaced by ``section``, or
    with ``section`` appended when it has none."""
    block = f"{BEGIN}\n{section.rstrip()}\n{END}\n"
    if BEGIN in document and END in document:
        head, rest = document.split(BEGIN, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        return head + block + ("\n" + tail if tail else "")
    return document.rstrip() + "\n\n" + block


def section_of(document: str) -> str | None:
    """The chaos section a document has, without its markers."""
    if BEGIN not in document or END not in document:
        return None
    return document.split(BEGIN, 1)[1].split(END, 1)[0].strip() + "\n"
