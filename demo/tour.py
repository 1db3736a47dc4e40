"""The guided tour (``python -m demo --tour``): a message from each network into Matrix, and a
reply from Matrix back out, each hop timed from the moment the sender hands it over to the
moment the other side's client shows it.

The senders are the clients people use: an XMPP client logged in to Prosody, a mail submitted
over SMTP to Postfix, a Teams user posting through the Graph API with their own delegated token.
The Matrix side is the demo user's encrypting client (matrix-nio), so every message into Matrix
was decrypted before it counts as arrived. Each hop prints one ``[tour]`` line that
tests/e2e/test_demo.py reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from typing import Any

import aiohttp

from demo.seed import (
    MAIL_PASSWORD,
    MAIL_PERSON,
    TEAMS_COLLEAGUE,
    TIMEOUT,
    Conversations,
    containing,
    mail_from,
    xmpp_jid_of,
)
from demo.stack import Stack
from tests.e2e.graph import GraphEmulator

GRAPH_SCOPE = "https://graph.microsoft.com/ChatMessage.Send"


def _plain_text(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    return str(part.get_content()) if part is not None else ""


async def _timed(
    hop: str,
    send: Callable[[], Awaitable[Any]],
    arrived: Callable[[], Awaitable[Any]],
    shown: Callable[[Any], str],
) -> float:
    """Send, wait until the other side shows it, print ``[tour] <hop> <ms> ms  <what arrived>``."""
    began = time.monotonic()
    await send()
    result = await arrived()
    seconds = time.monotonic() - began
    print(f"[tour] {hop:<16} {seconds * 1000:6.0f} ms  {shown(result)}", flush=True)
    return seconds


def _in_matrix(talk: Conversations) -> Callable[[Any], str]:
    def shown(event: Any) -> str:
        how = "decrypted" if talk.demo.was_encrypted(event) else "NOT encrypted"
        return f"{event.body!r} from {event.sender} ({how} by the demo user's client)"

    return shown


async def _graph_token(graph: GraphEmulator, first_name: str, password: str) -> str:
    """A delegated token for a Teams user (resource-owner password grant), as their app gets it."""
    form = {
        "grant_type": "password",
        "client_id": graph.app["clientId"],
        "client_secret": graph.app["clientSecret"],
        "username": graph.user(first_name)["userPrincipalName"],
        "password": password,
        "scope": GRAPH_SCOPE,
    }
    url = f"{graph.base}/{graph.tenant_id}/oauth2/v2.0/token"
    async with graph.http.post(url, data=form) as response:
        body = await response.json()
        if response.status != 200:
            raise RuntimeError(f"Teams sign-in of {first_name} failed: {body}")
    return str(body["access_token"])


async def run_tour(stack: Stack, talk: Conversations, *, round_number: int = 1) -> dict[str, float]:
    """One message each way on each network; returns the latency of each hop in seconds."""
    assert stack.mail is not None and stack.graph is not None
    demo, anna, graph, mail = talk.demo, talk.anna, stack.graph, stack.mail
    tag = f"(tour {round_number})"
    hops: dict[str, float] = {}
    print(
        "[tour] each hop: from the sender's hand-over to the other side's client showing it",
        flush=True,
    )

    # XMPP: Anna's client -> Prosody -> bridge component -> Synapse -> the demo user's client.
    text = f"Hello from XMPP {tag}"
    mark = demo.mark()
    hops["xmpp -> matrix"] = await _timed(
        "xmpp -> matrix",
        lambda: _sync(anna.send_chat, xmpp_jid_of(demo.mxid), text),
        lambda: demo.wait_for_message(talk.xmpp_room, containing(text), TIMEOUT, after=mark),
        _in_matrix(talk),
    )
    text = f"Reply from Matrix to XMPP {tag}"
    hops["matrix -> xmpp"] = await _timed(
        "matrix -> xmpp",
        lambda: demo.send_text(talk.xmpp_room, text),
        lambda: anna.wait_for_message(lambda m: text in str(m["body"]), TIMEOUT),
        lambda m: f"{m['body']!r} from {m['from'].bare} (in {anna.jid}'s XMPP client)",
    )

    # Mail: SMTP into the mail server (Postfix) -> LMTP to the bridge -> Matrix; back via the
    # bridge's SMTP relay -> Postfix -> Dovecot, read over IMAP (the stand-in: its Maildir).
    text = f"Hello from mail {tag}"
    answer = mail_from(
        MAIL_PERSON, talk.mail_portal, "Re: Quarterly report", text, reply_to=talk.last_mail
    )

    async def submit() -> None:
        refused = await mail.send(answer, mail_from=MAIL_PERSON, rcpt_to=[talk.mail_portal])
        if refused:
            raise RuntimeError(f"the mail server refused the tour's mail: {refused}")

    mark = demo.mark()
    hops["mail -> matrix"] = await _timed(
        "mail -> matrix",
        submit,
        lambda: demo.wait_for_message(talk.mail_room, containing(text), TIMEOUT, after=mark),
        _in_matrix(talk),
    )
    talk.last_mail = answer
    text = f"Reply from Matrix to mail {tag}"
    hops["matrix -> mail"] = await _timed(
        "matrix -> mail",
        lambda: demo.send_text(talk.mail_room, text),
        lambda: mail.wait_for_mail(
            MAIL_PERSON, MAIL_PASSWORD, timeout=TIMEOUT, match=lambda m: text in _plain_text(m)
        ),
        lambda m: f"{_plain_text(m).strip()!r} from {m['From']} (in {MAIL_PERSON}'s mailbox)",
    )

    # Teams: Alex posts through Graph with his own token -> change notification to the bridge
    # -> Matrix; the reply goes out through Graph as Adele (the demo user's Teams login).
    token = await _graph_token(graph, TEAMS_COLLEAGUE, f"{TEAMS_COLLEAGUE}-pw")
    text = f"Hello from Teams {tag}"

    async def post() -> None:
        url = f"{graph.graph_url}/chats/{talk.teams_chat}/messages"
        body = {"body": {"contentType": "html", "content": f"<p>{text}</p>"}}
        headers = {"Authorization": f"Bearer {token}"}
        async with graph.http.post(url, json=body, headers=headers) as response:
            if response.status != 201:
                raise RuntimeError(
                    f"Graph refused Alex's message: {response.status} {await response.text()}"
                )

    mark = demo.mark()
    hops["teams -> matrix"] = await _timed(
        "teams -> matrix",
        post,
        lambda: demo.wait_for_message(talk.teams_room, containing(text), TIMEOUT, after=mark),
        _in_matrix(talk),
    )
    text = f"Reply from Matrix to Teams {tag}"
    hops["matrix -> teams"] = await _timed(
        "matrix -> teams",
        lambda: demo.send_text(talk.teams_room, text),
        lambda: _in_teams(graph, talk.teams_chat, text),
        lambda m: (
            f"{text!r} from {m['from']['user']['displayName']} (in the Teams chat, via Graph)"
        ),
    )
    total = sum(hops.values())
    print(f"[tour] done: {len(hops)} hops, {total:.2f} s in all", flush=True)
    return hops


async def _sync(function: Callable[..., Any], *args: Any) -> None:
    function(*args)


async def _in_teams(graph: GraphEmulator, chat: str, text: str) -> dict[str, Any]:
    """The message with ``text`` once the chat, read through Graph, shows it (polled: Graph
    has no push for this reader)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        with contextlib.suppress(aiohttp.ClientError):
            for message in await graph.messages(chat):
                if text in message["body"]["content"]:
                    return message
        if time.monotonic() > deadline:
            raise AssertionError(f"Teams never showed {text!r}")
        await asyncio.sleep(0.05)
