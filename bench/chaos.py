"""The chaos benchmark: every connector in both directions under load while the bridge process
is SIGKILLed at random moments; what arrived is compared with what was sent, per portal.

The hub is :func:`bench.harness.running_hub` (real Synapse, Prosody, Postfix and Dovecot, the
Graph emulator, the bridge as a separate process); the portals are opened as by the latency
paths (:mod:`bench.paths`). Six senders run at once, one per direction, each sending its
``messages`` tokens at a fixed pace:

- XMPP client → Matrix: a chat stanza asking for a receipt (XEP-0184); acknowledged by the
  receipt, refused by an error stanza (Prosody bounces while the component is away).
- Mail in → Matrix: SMTP to the real Postfix, which hands the bridge one mail at a time over
  LMTP (``lmtp_destination_concurrency_limit = 1``, so its order is the send order);
  acknowledged by Postfix's ``status=sent`` (the bridge's ``250``), refused by a
  ``status=deferred`` (Postfix retries; the queue is flushed while the run settles).
- Teams → Matrix: a post in the Graph emulator; refused when a notification of it got no
  ``2xx`` from the bridge (the bridge catches up on the chat when it starts).
- Matrix → XMPP, mail, Teams: the Matrix user's ``PUT /send``; acknowledged by its event id.

A killer task SIGKILLs the bridge at seeded random moments of the sending time, waits a seeded
random pause, and restarts it while the senders go on. Afterwards the run waits until nothing
new arrives and everything not refused is in (or a time limit passes), then counts per
direction (:mod:`bench.chaos_tally`). What was sent and what arrived, per direction, is left in
``chaos-arrivals.json`` in the working directory (``--keep`` keeps it).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import random
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from bench.chaos_tally import GIVE_UP, QUIET_LIMIT, ChaosResult, DirectionRecord, Kill, tally
from bench.harness import BenchHub, running_hub
from bench.mail import LmtpClient
from bench.paths.email import MailDm, email_paths
from bench.paths.teams import teams_paths
from bench.paths.xmpp import xmpp_paths
from bench.timing import TimedMatrixUser
from graph_emulator.state import Message
from graph_emulator.teamwork import ChangeType
from tests.e2e.mail import POSTFIX, MailServers

log = logging.getLogger("bench.chaos")
TOKEN = re.compile(r"chaos-[a-z]+-[a-z]+-\d{5}")
INTERVAL = 0.25
"""Seconds between two sends of one direction: six directions at 4 messages per second each
keep Synapse (the bottleneck on two cores) busy but not saturated, so what is late is late
because of a kill."""
MAX_PAUSE = 2.0
"""Longest random pause between a SIGKILL and the restart."""
SETTLE = 20.0
"""Quiet seconds (nothing new arriving) after which a run with everything in is done."""
_DELIVERY = re.compile(r"postfix/\w+\[\d+\]: (\w+): to=<([^>]*)>, .* status=(\w+) ")
_CLEANUP = re.compile(r"postfix/cleanup\[\d+\]: (\w+): message-id=(<[^>]*>)")


def token_of(text: str) -> str | None:
    found = TOKEN.search(text)
    return found.group(0) if found else None


def matrix_arrivals(user: TimedMatrixUser, room_id: str, key: str) -> list[str]:
    """Tokens of ``key`` in the room's messages as ``/sync`` delivered them, repeats kept."""
    found, events = [], set()
    for event in user.events:
        if event["room_id"] != room_id or event.get("type") != "m.room.message":
            continue
        if event.get("event_id") in events:
            continue
        events.add(event.get("event_id"))
        token = token_of(str(event.get("content", {}).get("body", "")))
        if token is not None and token.startswith(f"chaos-{key}-"):
            found.append(token)
    return found


class PostfixLog:
    """Postfix's answers for the mails to one address, read from its log."""

    def __init__(self, mail: MailServers, rcpt: str) -> None:
        self.path = mail.postfix_log
        self.rcpt = rcpt
        self.start = self.path.stat().st_size if self.path.exists() else 0

    def statuses(self) -> dict[str, set[str]]:
        """Message-ID → the statuses its deliveries to ``rcpt`` got."""
        with self.path.open("rb") as f:
            f.seek(self.start)
            lines = f.read().decode(errors="replace").splitlines()
        ids: dict[str, str] = {}
        found: dict[str, set[str]] = {}
        for line in lines:
            if cleanup := _CLEANUP.search(line):
                ids[cleanup.group(1)] = cleanup.group(2)
            elif (d := _DELIVERY.search(line)) and d.group(2) == self.rcpt and d.group(1) in ids:
                found.setdefault(ids[d.group(1)], set()).add(d.group(3))
        return found


async def reload_postfix(mail: MailServers, settings: dict[str, str]) -> None:
    mail.postfix_settings.update(settings)
    mail.write_config()
    conf = str(mail.postfix_dir / "conf")
    result = await asyncio.to_thread(
        subprocess.run, [POSTFIX, "-c", conf, "reload"], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(f"postfix reload failed: {result.stdout}{result.stderr}")
    await asyncio.sleep(0.5)


@dataclass
class Direction:
    """One direction: how to send a token, and where to read what arrived and what the sender
    was told. ``send`` records acknowledgements it learns at once; ``refresh`` the rest."""

    record: DirectionRecord
    send: Callable[[str], Any]
    arrivals: Callable[[], list[str]]
    refresh: Callable[[], None] = lambda: None


def matrix_sender(user: TimedMatrixUser, room_id: str, record: DirectionRecord) -> Any:
    async def send(token: str) -> None:
        try:
            await user.send_text(room_id, token)
        except Exception as err:  # the homeserver refused it: the sender knows
            log.info("%s: Matrix refused %s: %s", record.key, token, err)
            record.refused.add(token)
        else:
            record.acknowledged.add(token)

    return send


async def directions(hub: BenchHub, alice: TimedMatrixUser) -> tuple[list[Direction], list[str]]:
    """Opens the portals (as the latency paths do) and returns the six directions."""
    skipped: list[str] = []
    dirs: list[Direction] = []
    xmpp_in, xmpp_out = await xmpp_paths(hub, alice, localpart="xchaos")
    xmpp_room = xmpp_out.room_id
    xmpp_user = xmpp_in.xmpp_user
    rec = DirectionRecord("xmpp-in", xmpp_in.label, ack_meaning="XEP-0184 receipt")
    stanza_ids: dict[str, str] = {}

    def send_xmpp(token: str) -> None:
        stanza_ids[xmpp_user.send_chat(xmpp_in.matrix_jid, token, receipt=True)] = token

    def refresh_xmpp(rec: DirectionRecord = rec) -> None:
        for m in xmpp_user.messages:
            if m["receipt"] and str(m["receipt"]) in stanza_ids:
                rec.acknowledged.add(stanza_ids[str(m["receipt"])])
            if m["type"] == "error" and str(m["id"]) in stanza_ids:
                rec.refused.add(stanza_ids[str(m["id"])])

    dirs.append(
        Direction(
            rec, send_xmpp, lambda: matrix_arrivals(alice, xmpp_room, "xmpp-in"), refresh_xmpp
        )
    )

    rec = DirectionRecord("xmpp-out", xmpp_out.label, ack_meaning="event id from Synapse")
    dirs.append(
        Direction(
            rec,
            matrix_sender(alice, xmpp_room, rec),
            lambda: [
                t
                for m in xmpp_user.messages
                if m["type"] in ("chat", "normal")
                and (t := token_of(str(m["body"]))) is not None
                and t.startswith("chaos-xmpp-out-")
            ],
        )
    )

    mail_in, mail_postfix, mail_out = await email_paths(hub, alice, LmtpClient(hub.lmtp_port))
    dm: MailDm = mail_in.dm
    if mail_postfix is None or hub.mail is None:
        skipped.append(f"mail in through Postfix: {hub.mail_missing}")
    else:
        mail = hub.mail
        await reload_postfix(mail, {"lmtp_destination_concurrency_limit": "1"})
        postfix_log = PostfixLog(mail, dm.portal)
        rec = DirectionRecord(
            "mail-in", mail_postfix.label, ack_meaning="Postfix `status=sent` (the bridge's `250`)"
        )
        message_ids: dict[str, str] = {}

        async def send_mail(token: str, rec: DirectionRecord = rec) -> None:
            msg: EmailMessage = dm.reply(token)
            message_ids[str(msg["Message-ID"])] = token
            refused = await mail.send(msg, mail_from=dm.correspondent, rcpt_to=[dm.portal])
            if refused:  # Postfix itself refused: never happens unless Postfix is broken
                rec.refused.add(token)

        def refresh_mail(rec: DirectionRecord = rec) -> None:
            for message_id, statuses in postfix_log.statuses().items():
                token = message_ids.get(message_id)
                if token is None:
                    continue
                if "sent" in statuses:
                    rec.acknowledged.add(token)
                if statuses - {"sent"}:
                    rec.refused.add(token)

        dirs.append(
            Direction(
                rec, send_mail, lambda: matrix_arrivals(alice, dm.room_id, "mail-in"), refresh_mail
            )
        )

    rec = DirectionRecord("mail-out", mail_out.label, ack_meaning="event id from Synapse")

    def mail_arrivals() -> list[str]:
        found = []
        for message in hub.mail_sink.mails:
            part = message.get_body(preferencelist=("plain",))
            token = token_of(str(part.get_content())) if part is not None else None
            if token is not None and token.startswith("chaos-mail-out-"):
                found.append(token)
        return found

    dirs.append(Direction(rec, matrix_sender(alice, dm.room_id, rec), mail_arrivals))

    teams_in, teams_out = await teams_paths(hub, alice)
    chat_id, teams_room = teams_in.chat_id, teams_out.room_id
    graph = hub.graph
    rec = DirectionRecord(
        "teams-in", teams_in.label, ack_meaning="the emulator created the message (`201`)"
    )
    posted: dict[str, str] = {}

    async def send_teams(token: str, rec: DirectionRecord = rec) -> None:
        posted[await graph.post_as("alex", chat_id, f"<p>{token}</p>")] = token
        rec.acknowledged.add(token)

    def refresh_teams(rec: DirectionRecord = rec) -> None:
        for delivery in graph.services.notifier.deliveries:
            if delivery.kind != "change":
                continue
            resource = str(delivery.payload)
            for message_id, token in posted.items():
                if message_id in resource and (
                    delivery.state == "failed" or len(delivery.attempts) > 1
                ):
                    rec.refused.add(token)

    dirs.append(
        Direction(
            rec, send_teams, lambda: matrix_arrivals(alice, teams_room, "teams-in"), refresh_teams
        )
    )

    rec = DirectionRecord("teams-out", teams_out.label, ack_meaning="event id from Synapse")
    created: list[str] = []

    def on_change(change: ChangeType, message: Message) -> None:
        if change == "created" and message.conversation.id == chat_id:
            token = token_of(message.content)
            if token is not None and token.startswith("chaos-teams-out-"):
                created.append(token)

    graph.services.teamwork.listeners.append(on_change)
    dirs.append(Direction(rec, matrix_sender(alice, teams_room, rec), lambda: list(created)))
    return dirs, skipped


class Killer:
    """SIGKILLs and restarts the bridge at the seeded moments, recording each kill."""

    def __init__(self, hub: BenchHub, dirs: list[Direction], rng: random.Random) -> None:
        self.hub = hub
        self.dirs = dirs
        self.rng = rng
        self.kills: list[Kill] = []

    async def run(self, moments: list[float], began: float) -> None:
        for moment in moments:
            await asyncio.sleep(max(0.0, began + moment - time.perf_counter()))
            pause = self.rng.uniform(0, MAX_PAUSE)
            sent = {d.record.key: len(d.record.sent) for d in self.dirs}
            killed = time.perf_counter()
            await asyncio.to_thread(self.hub.bridge.kill)
            log.info(
                "SIGKILL %d at %.1f s; sent so far %s", len(self.kills) + 1, killed - began, sent
            )
            await asyncio.sleep(pause)
            await self.hub.bridge.start(self.hub.as_port)
            self.kills.append(Kill(killed - began, time.perf_counter() - killed, sent))


async def send_all(direction: Direction, messages: int, interval: float, began: float) -> None:
    rec = direction.record
    for i in range(messages):
        token = f"chaos-{rec.key}-{i:05d}"
        rec.sent.append(token)
        rec.sent_at[token] = time.perf_counter() - began
        result = direction.send(token)
        if asyncio.iscoroutine(result):
            try:
                await result
            except Exception as err:  # the sender's own side failed: count it as refused
                log.info("%s: sending %s failed: %s", rec.key, token, err)
                rec.refused.add(token)
        await asyncio.sleep(max(0.0, began + (i + 1) * interval - time.perf_counter()))


async def settle(hub: BenchHub, dirs: list[Direction]) -> tuple[float, bool]:
    """Until nothing new has arrived for SETTLE s and everything not refused is in, or
    GIVE_UP s; Postfix's queue is flushed every few seconds. (seconds waited, everything in)"""
    began = last_change = time.perf_counter()
    last: tuple[int, ...] = ()
    while True:
        if hub.mail is not None:
            await asyncio.to_thread(hub.mail.flush)
        for d in dirs:
            d.refresh()
        counts = tuple(len(d.arrivals()) for d in dirs)
        now = time.perf_counter()
        if counts != last:
            last, last_change = counts, now
        complete = all(set(d.record.sent) - d.record.refused <= set(d.arrivals()) for d in dirs)
        quiet = now - last_change
        if (complete and quiet >= SETTLE) or quiet >= QUIET_LIMIT or now - began >= GIVE_UP:
            return now - began, complete
        await asyncio.sleep(2)


async def chaos(
    workdir: Path, source: str, *, messages: int, kills: int, seed: int, command: str
) -> ChaosResult:
    rng = random.Random(seed)
    sending = messages * INTERVAL
    moments = sorted(rng.uniform(0.05, 0.9) * sending for _ in range(kills))
    async with running_hub(workdir, source) as hub:
        alice = await hub.user("alice")
        dirs, skipped = await directions(hub, alice)
        log.info(
            "chaos: seed %d, %d messages per direction, %d kills at %s s",
            seed,
            messages,
            kills,
            ", ".join(f"{m:.1f}" for m in moments),
        )
        killer = Killer(hub, dirs, rng)
        began = time.perf_counter()
        killing = asyncio.create_task(killer.run(moments, began))
        await asyncio.gather(*(send_all(d, messages, INTERVAL, began) for d in dirs))
        await killing
        sending_seconds = time.perf_counter() - began
        if hub.bridge.proc is None or hub.bridge.proc.poll() is not None:
            await hub.bridge.start(hub.as_port)
        settle_seconds, complete = await settle(hub, dirs)
        for d in dirs:
            d.refresh()
            d.record.arrived = d.arrivals()
        results = [tally(d.record) for d in dirs]
        raw = {d.record.key: {"sent": d.record.sent, "arrived": d.record.arrived,
                              "refused": sorted(d.record.refused)} for d in dirs}  # fmt: skip
        (workdir / "chaos-arrivals.json").write_text(json.dumps(raw, indent=1))
    return ChaosResult(
        date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        command=command,
        revision=hub.revision,
        seed=seed,
        messages=messages,
        interval=INTERVAL,
        kills=killer.kills,
        directions=results,
        sending_seconds=sending_seconds,
        settle_seconds=settle_seconds,
        quiescent=complete,
        skipped=skipped,
    )
