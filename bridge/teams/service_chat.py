"""Reaching a Matrix user from Teams alone: the service chat.

A tenant's relay account is a Teams user. A Teams person opens a one-on-one chat with it and
writes a Matrix ID (``@anna:luxchat.lu``, or ``chat with @anna:luxchat.lu``). The bridge then

1. checks the hub's federation policy for the person's tenant and the Matrix user's server,
   and that the Matrix user exists (their profile, through the core);
2. creates a Teams group chat of the person and the relay account (``POST /chats``), named
   after the Matrix user *and* their Matrix ID, which no display name can imitate;
3. queues, in that chat's portal queue, the input that creates its Matrix portal as a direct
   chat and invites the Matrix user (:data:`OPENED`);
4. answers in the service chat with what happened, or why not and whom to ask.

From then on the group chat is an ordinary bridged chat: the relay account's subscription
reports the person's messages, and the Matrix user's answers are posted by the relay account
under the "External · via Matrix" line (:func:`bridge.teams.from_matrix.relayed`).

The service chat itself is never a portal: it is recognised before the inbound path would read
its members (Graph's one-on-one chat ids name both members: ``19:<a>_<b>@unq.gbl.spaces``).

Each request message is answered once, and opens at most one group chat, whatever Graph
redelivers or however often a crash makes the inbox convert it again: a marker per request
message is written before the chat is created and advanced after each step. A person may make
``requests_per_hour`` requests; beyond it they get one answer saying so, then silence.
"""

from __future__ import annotations

import asyncio
import html
import math
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph.generated.models.aad_user_conversation_member import AadUserConversationMember
from msgraph.generated.models.chat import Chat
from msgraph.generated.models.chat_message import ChatMessage
from msgraph.generated.models.chat_type import ChatType
from msgraph.generated.models.conversation_member import ConversationMember
from msgraph.generated.users.item.chats.chats_request_builder import ChatsRequestBuilder

from bridge.core import (
    ChatInfo,
    MessagePart,
    PermanentError,
    RemoteChatID,
    RemoteEvent,
    RemoteMessage,
    RemoteMessageID,
    UserInfo,
)
from bridge.portal.models import RemoteInput
from bridge.teams.errors import graph_call
from bridge.teams.from_matrix import EXTERNAL, chat_message, shown_text
from bridge.teams.ids import NETWORK, parse_message_resource, portal_key, user_id
from bridge.teams.network import TeamsNetwork
from bridge.teams.service_config import ServiceChatConfig
from bridge.teams.tenant import TenantLink
from bridge.teams.to_matrix import ghost_name

NOTIFICATION = "notification"
"""The inbound path's kind for a kept Graph notification (:mod:`bridge.teams.inbound`)."""
OPENED = "service_chat_opened"
"""Input kind, queued on the new group chat: create its portal and invite the Matrix user."""
ENTRY = "teams service chat"

Converter = Callable[[RemoteInput], Awaitable[Sequence[RemoteEvent]]]

_ONE_ON_ONE = re.compile(r"^19:(?P<a>[0-9a-fA-F-]{36})_(?P<b>[0-9a-fA-F-]{36})@unq\.gbl\.spaces$")
_TAGS = re.compile(r"<[^>]*>")
_CANDIDATE = re.compile(r"@\S*")
# A user ID per the Matrix spec (historical localparts allowed), on a DNS name, IPv4 or
# bracketed IPv6 literal, with an optional port; 255 characters at most.
_MXID = re.compile(
    r"@(?P<local>[!-9;-~]+):(?P<server>(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]{2,45}\])"
    r"(?::\d{1,5})?)"
)
MAX_MXID = 255
WINDOW = 3600.0

HELP = (
    "<p>I am the bridge to Matrix. To chat with someone on Matrix, write their Matrix ID,"
    " for example <b>@anna:luxchat.lu</b>. I will open a new chat with them here in Teams.</p>"
)


class BadRequest(Exception):
    """A request message the service answers with ``answer`` (HTML) and nothing else."""

    def __init__(self, answer: str) -> None:
        super().__init__(answer)
        self.answer = answer


def requested_mxid(content: str) -> str | None:
    """The Matrix ID a service-chat message names, its server name lowercased (DNS names are
    case-blind, historical localparts are not); ``None`` if it names none.
    Raises :class:`BadRequest` for something that looks like one but is not valid."""
    text = html.unescape(_TAGS.sub(" ", content))
    for word in _CANDIDATE.findall(text):
        word = word.rstrip(".,;!?)»”'\"")
        if ":" not in word:
            continue
        match = _MXID.fullmatch(word) if len(word) <= MAX_MXID else None
        if match is None:
            shown = html.escape(shown_text(word, 80))
            raise BadRequest(
                f"<p><b>{shown}</b> is not a Matrix ID. A Matrix ID looks like"
                " <b>@name:server.example</b>: an @, the user's name, a colon and their"
                " server.</p>"
            )
        return f"@{match['local']}:{match['server'].lower()}"
    return None


def service_partner(chat_id: str, relay_id: str) -> str | None:
    """The Teams person of a one-on-one chat with the relay account, or ``None`` if
    ``chat_id`` is not such a chat."""
    match = _ONE_ON_ONE.match(chat_id)
    if match is None or not relay_id:
        return None
    a, b = match["a"].lower(), match["b"].lower()
    if relay_id.lower() == a:
        return b
    if relay_id.lower() == b:
        return a
    return None


class RateLimit:
    """At most ``per_hour`` requests per Teams person in any hour (in memory: a restart
    forgets it, which errs on the side of answering)."""

    def __init__(self, per_hour: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._per_hour = per_hour
        self._clock = clock
        self._seen: dict[str, deque[float]] = {}
        self._told: dict[str, float] = {}

    def allow(self, person: str) -> bool | None:
        """True: go ahead (counted). False: refused, tell them once. None: refused, told
        already in this window (say nothing)."""
        now = self._clock()
        seen = self._seen.setdefault(person, deque())
        while seen and seen[0] <= now - WINDOW:
            seen.popleft()
        if len(seen) < self._per_hour:
            seen.append(now)
            self._told.pop(person, None)
            return True
        if person in self._told and self._told[person] > now - WINDOW:
            return None
        self._told[person] = now
        return False

    def retry_in_minutes(self, person: str) -> int:
        seen = self._seen.get(person)
        if not seen:
            return 1
        return max(1, math.ceil((seen[0] + WINDOW - self._clock()) / 60))


class ServiceChat:
    """Wraps the inbound converter: service-chat notifications and :data:`OPENED` inputs are
    handled here; everything else goes to ``inner`` unchanged."""

    def __init__(
        self,
        net: TeamsNetwork,
        cfg: ServiceChatConfig,
        inner: Converter,
        ready: asyncio.Event,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.net = net
        self.cfg = cfg
        self._inner = inner
        self._ready = ready
        self._ctx = net.ctx
        self._log = net.ctx.log
        self.limit = RateLimit(cfg.requests_per_hour, clock)

    async def convert(self, item: RemoteInput) -> Sequence[RemoteEvent]:
        if item.kind == OPENED:
            return [self._opened(item)]
        if self.cfg.enabled and item.kind == NOTIFICATION:
            await self._ready.wait()
            found = await self._service_chat(item)
            if found is not None:
                link, person, msg_id = found
                await self.handle(link, item.portal.remote_id, person, msg_id)
                return []
        return await self._inner(item)

    async def _service_chat(self, item: RemoteInput) -> tuple[TenantLink, str, str] | None:
        """(tenant, Teams person, message id) if ``item`` is a new message in a tenant's
        service chat that is not bridged; else ``None`` (the inbound path decides)."""
        payload = item.payload
        if str(payload.get("changeType", "")) != "created":
            return None
        parsed = parse_message_resource(str(payload.get("resource", "")))
        if parsed is None or parsed[0] != item.portal.remote_id:
            return None
        chat_id, msg_id = parsed
        if not _ONE_ON_ONE.match(chat_id):
            return None
        link = self.net.tenant(str(payload.get("tenantId") or ""))
        if link is None or link.relay is None:
            return None
        await link.resolve_relay()
        person = service_partner(chat_id, link.relay_user_id or "")
        if person is None:
            return None
        portal = await self._ctx.store.get_portal(RemoteChatID(chat_id))
        if portal is not None and portal.mxid:
            return None  # an older relay chat that was bridged from Matrix: it stays a portal
        return link, person, msg_id

    # --- one request ------------------------------------------------------------------------

    async def handle(self, link: TenantLink, chat_id: str, person: str, msg_id: str) -> None:
        """Answer one message of ``person`` in the service chat ``chat_id``, once."""
        if msg_id in self.net.sent:
            return  # the service's own answer
        marker = marker_of(chat_id, msg_id)
        state = await self._ctx.store.kv_get(marker)
        if state == "done":
            return
        if state is not None and state.startswith("opened\n"):
            _, mxid, name = state.split("\n", 2)
            await self._answer(link, chat_id, marker, _opened_answer(mxid, name))
            return
        if state is not None and state.startswith("bridging\n"):
            # A crash after the group chat was chosen: bridge that one (queueing is idempotent).
            _, group, mxid, name, person_name = state.split("\n", 4)
            await self._bridge(link, chat_id, person, marker, group, mxid, name, person_name)
            return
        if state is not None and state.startswith("opening"):
            # A crash between creating the chat and recording it: no second chat is made.
            await self._recover(link, chat_id, person, marker, state)
            return
        msg = await graph_call(
            f"read message {msg_id} of the service chat",
            link.app.chats.by_chat_id(chat_id).messages.by_chat_message_id(msg_id).get(),
            reading=True,
        )
        sender = _sender(msg)
        if sender is None or sender[0] != person:
            return  # the relay's own message, a system event, or not the chat's person
        # A retry of this request (an outage after it was counted) is not a new request.
        allowed = True if state == "allowed" else self.limit.allow(person)
        if allowed is True and state != "allowed":
            await self._ctx.store.kv_set(marker, "allowed")
        if allowed is None:
            self._log.info("Service chat: %s is over the request limit; not answered", person)
            await self._ctx.store.kv_set(marker, "done")
            return
        if allowed is False:
            minutes = self.limit.retry_in_minutes(person)
            await self._answer(
                link, chat_id, marker, _too_many(self.cfg.requests_per_hour, minutes)
            )
            return
        try:
            found = requested_mxid((msg.body.content or "") if msg and msg.body else "")
            if found is None:
                raise BadRequest(HELP)
            mxid = found
            name = await self._check(link, sender[2], mxid)
        except BadRequest as bad:
            await self._answer(link, chat_id, marker, bad.answer)
            return
        written = msg.created_date_time if msg is not None else None
        since = written.isoformat() if written is not None else ""
        person_name = shown_text(sender[1])
        state = "\n".join(["opening", mxid, name, person_name, since])
        await self._ctx.store.kv_set(marker, state)
        group = await self._create_chat(link, person, mxid, name)
        await self._bridge(link, chat_id, person, marker, group, mxid, name, person_name)

    async def _bridge(
        self, link: TenantLink, chat_id: str, person: str, marker: str, group: str,
        mxid: str, name: str, person_name: str,
    ) -> None:  # fmt: skip
        """Queue the portal of the new group chat ``group``, then answer the request."""
        await self._ctx.store.kv_set(
            marker, "\n".join(["bridging", group, mxid, name, person_name])
        )
        await self.net.remember_chat(group, link.id)
        payload: dict[str, Any] = {
            "matrix_user": mxid,
            "matrix_name": name,
            "teams_user": person,
            "teams_name": person_name,
            "tenant": link.id,
        }
        await self._ctx.accept_remote(
            RemoteInput(portal=portal_key(group), kind=OPENED, payload=payload, dedupe_id=OPENED)
        )
        await self._ctx.store.kv_set(marker, f"opened\n{mxid}\n{name}")
        self._log.info("Service chat: %s opened Teams chat %s with %s", person, group, mxid)
        await self._answer(link, chat_id, marker, _opened_answer(mxid, name))

    async def _recover(
        self, link: TenantLink, chat_id: str, person: str, marker: str, state: str
    ) -> None:
        """The request was being handled when the bridge stopped: if Graph shows exactly one
        group chat it may have created for it (the person and the relay account, the
        request's name, created since the request, not bridged), that one is bridged; if
        none, or if it cannot tell which, the person is told, and no chat is created."""
        fields = state.split("\n")
        if len(fields) == 5 and link.relay_user_id:
            _, mxid, name, person_name, since = fields
            found = await self._created_for(link, person, _topic(mxid, name), since)
            if found is not None:
                await self._bridge(link, chat_id, person, marker, found, mxid, name, person_name)
                return
        await self._answer(link, chat_id, marker, INTERRUPTED)

    async def _created_for(
        self, link: TenantLink, person: str, topic: str, since: str
    ) -> str | None:
        assert link.relay_user_id
        params = ChatsRequestBuilder.ChatsRequestBuilderGetQueryParameters(
            expand=["members"], top=50
        )
        page = await graph_call(
            "look for the service's last chat",
            link.app.users.by_user_id(link.relay_user_id).chats.get(
                RequestConfiguration(query_parameters=params)
            ),
            reading=True,
        )
        wanted = {person, link.relay_user_id.lower()}
        after = datetime.fromisoformat(since) if since else None
        candidates = []
        for chat in (page.value if page is not None else None) or []:
            if chat.chat_type != ChatType.Group or chat.topic != topic or not chat.id:
                continue
            created = chat.created_date_time
            if after is not None and (created is None or created < after):
                continue
            ids = {
                user_id(str(getattr(m, "user_id", None) or (m.additional_data or {}).get("userId")))
                for m in chat.members or []
            }
            portal = await self._ctx.store.get_portal(RemoteChatID(chat.id))
            if ids == wanted and (portal is None or not portal.mxid):
                candidates.append(chat.id)
        return candidates[0] if len(candidates) == 1 else None

    async def _check(self, link: TenantLink, sender_tenant: str, mxid: str) -> str:
        """The Matrix user's display name, if the policy lets the person reach them and they
        exist; else :class:`BadRequest` with the reason and whom to ask."""
        shown = html.escape(mxid)
        if self._ctx.parse_ghost_mxid(mxid) is not None:
            raise BadRequest(
                f"<p><b>{shown}</b> is a Teams person as Matrix sees them: chat with them in"
                " Teams directly.</p>"
            )
        policy = self._ctx.federation
        for tenant in dict.fromkeys([link.tenant.tenant_id, sender_tenant]):
            # A sender whose tenant Graph does not name is refused: the policy cannot vouch.
            refused = policy.refusal(NETWORK, tenant, mxid, entry=ENTRY) if tenant else True
            if refused is not None:
                server = html.escape(mxid.split(":", 1)[1])
                raise BadRequest(
                    f"<p>I cannot open a chat with <b>{shown}</b>: this hub does not connect"
                    f" your organisation with Matrix users at <b>{server}</b>. If you need it,"
                    f" ask {html.escape(self.cfg.contact)}.</p>"
                )
        name, _, _ = await self._ctx.matrix_profile(mxid)
        if name is None:
            raise BadRequest(
                f"<p>I could not find the Matrix user <b>{shown}</b>: the ID does not exist,"
                " or its server did not answer. Check the ID with the person, then write it"
                " again.</p>"
            )
        return shown_text(name)

    async def _create_chat(self, link: TenantLink, person: str, mxid: str, name: str) -> str:
        """A new group chat of ``person`` and the relay account, named so no display name can
        pass for a colleague: the Matrix ID is in it."""
        assert link.relay is not None and link.relay_user_id
        base = link.graph_url.rstrip("/")  # the tenant's cloud: a national one is not global
        members: list[ConversationMember] = [
            AadUserConversationMember(
                odata_type="#microsoft.graph.aadUserConversationMember",
                roles=["owner"],
                additional_data={"user@odata.bind": f"{base}/users('{member}')"},
            )
            for member in (link.relay_user_id, person)
        ]
        topic = _topic(mxid, name)
        chat = await graph_call(
            f"open a chat with {mxid}",
            link.relay.chats.post(Chat(chat_type=ChatType.Group, topic=topic, members=members)),
            delegated=True,
        )
        if chat is None or not chat.id:
            raise PermanentError("Graph created a chat without an id")
        return chat.id

    async def _answer(self, link: TenantLink, chat_id: str, marker: str, content: str) -> None:
        assert link.relay is not None
        sent = await graph_call(
            "answer in the service chat",
            link.relay.chats.by_chat_id(chat_id).messages.post(chat_message(content)),
            delegated=True,
        )
        if sent is not None and sent.id:
            self.net.sent.add(sent.id)
        await self._ctx.store.kv_set(marker, "done")

    # --- the new group chat's portal --------------------------------------------------------

    def _opened(self, item: RemoteInput) -> RemoteEvent:
        """The first event of the new chat's portal: it creates the Matrix room as a direct
        chat, invites the Matrix user, and tells them who reached them from Teams."""
        p = item.payload
        mxid, person = str(p["matrix_user"]), user_id(str(p["teams_user"]))
        link = self.net.tenant(str(p.get("tenant", "")))
        agency = link.tenant.display_name if link is not None else "Teams"
        shown = ghost_name(str(p.get("teams_name") or ""), agency) or "A Teams user"
        text = (
            f"{shown} started this chat from Microsoft Teams to reach you. What you write here"
            " reaches them in Teams, under your Matrix ID and marked as external."
        )
        return RemoteMessage(
            portal=item.portal,
            id=RemoteMessageID(f"{OPENED}:{item.portal.remote_id}"),
            sender=person,
            sender_info=UserInfo(name=shown),
            chat_info=ChatInfo(is_direct=True, matrix_users=[mxid], members=[person]),
            parts=[MessagePart(text=text, notice=True)],
        )


INTERRUPTED = (
    "<p>Your last request was interrupted. If a new chat with the Matrix user appeared in your"
    " chat list, use it; if not, write the Matrix ID again.</p>"
)


def _opened_answer(mxid: str, name: str) -> str:
    return (
        f"<p>I opened a new chat with <b>{html.escape(name)}</b> (<b>{html.escape(mxid)}</b>),"
        f" a Matrix user outside your organisation: look for “{html.escape(_topic(mxid, name))}”"
        " in your chat list. They have been invited on Matrix. What you write there reaches"
        f" them; their answers appear there under “{EXTERNAL}”.</p>"
    )


def _too_many(per_hour: int, minutes: int) -> str:
    return (
        f"<p>You have asked for {per_hour} chats in the last hour, the most this bridge allows."
        f" Try again in {minutes} minute(s).</p>"
    )


def _topic(mxid: str, name: str) -> str:
    topic = f"{name} · {mxid} (Matrix)" if name and name != mxid else f"{mxid} (Matrix)"
    return topic[:250]


def marker_of(chat_id: str, msg_id: str) -> str:
    """The key of how far the request ``msg_id`` got (pruned by age: ``kv_markers``)."""
    return f"service-request:{chat_id}:{msg_id}"


def _sender(msg: ChatMessage | None) -> tuple[str, str, str] | None:
    """(AAD id, display name, tenant id) of a user's message; ``None`` otherwise."""
    user = msg.from_.user if msg is not None and msg.from_ is not None else None
    if user is None or not user.id:
        return None
    tenant = getattr(user, "tenant_id", None) or (user.additional_data or {}).get("tenantId")
    return user_id(user.id), user.display_name or "", str(tenant or "").lower()


def service_chat_for(net: TeamsNetwork, section: dict[str, Any], inner: Converter,
                     ready: asyncio.Event) -> ServiceChat:  # fmt: skip
    """The service chat of ``connectors.teams`` (``section``), in front of ``inner`` (the
    inbound converter): use its :meth:`ServiceChat.convert` as the converter."""
    return ServiceChat(net, ServiceChatConfig.from_section(section), inner, ready)
