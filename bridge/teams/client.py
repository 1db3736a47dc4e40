"""The clients that act on Teams for Matrix users.

- :class:`TeamsSharedClient` (login id ``""``) reads chats and people with each tenant's app
  token and posts for Matrix users without a Teams login through the tenant's relay account,
  with the sender's name in front. Without a relay account those users are asked to log in.
- :class:`TeamsUserClient` acts as one Matrix user's own Teams account (delegated token from
  their device-code login): messages, edits, deletions and reactions appear as theirs.

Graph allows sending, editing, deleting and reacting only with delegated tokens, which is why
the app token alone cannot post (Graph answers 403 outside migration mode).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from msgraph import GraphServiceClient
from msgraph.generated.chats.item.messages.item.set_reaction.set_reaction_post_request_body import (
    SetReactionPostRequestBody,
)
from msgraph.generated.chats.item.messages.item.unset_reaction.unset_reaction_post_request_body import (
    UnsetReactionPostRequestBody,
)
from msgraph.generated.models.chat_type import ChatType

from bridge.core import (
    ChatInfo,
    GroupChat,
    LoginID,
    MatrixEdit,
    MatrixKick,
    MatrixMembership,
    MatrixMessage,
    MatrixReaction,
    MatrixReactionRemove,
    MatrixRedaction,
    NotSupported,
    PermanentError,
    PortalKey,
    RemoteEvent,
    RemoteMessageID,
    RemoteUserID,
    TransientError,
    UserInfo,
)
from bridge.portal.models import Login, Portal, RemoteInput
from bridge.teams import (
    channel_outbound,
    channels,
    directory,
    group_chats,
    matrix_members,
    member_sync,
    members,
    team_bridging,
)
from bridge.teams.errors import as_bridge_error, graph_call
from bridge.teams.files import read_within, share_to_chat
from bridge.teams.from_matrix import as_posted, body_html, chat_message, edited_message
from bridge.teams.ids import NETWORK, parse_channel, portal_key, user_id
from bridge.teams.mentions import Resolve, has_pills, teams_mentions
from bridge.teams.network import TeamsNetwork
from bridge.teams.protocol import TokenError
from bridge.teams.protocol.msal_auth import MsalTokenProvider
from bridge.teams.relay_reactions import RelayReactions
from bridge.teams.tenant import TenantLink
from bridge.teams.to_matrix import ghost_name
from bridge.teams.tokens import LoginSignIn

T = TypeVar("T")

NEEDS_LOGIN = "Your Teams account is needed for this: send `login teams` to the bridge bot."


class _TeamsActions:
    """Matrix → Teams for one acting account; subclasses say which account that is."""

    login_id: LoginID
    net: TeamsNetwork
    delegated = True

    async def _acting(self, chat_id: str, sender_name: str) -> tuple[GraphServiceClient, bool]:
        """The Graph client to act with and whether it is a relay (prefix the sender)."""
        raise NotImplementedError

    async def handle_matrix_message(self, msg: MatrixMessage) -> RemoteMessageID:
        chat_id = msg.portal.remote_id
        graph, relay = await self._acting(chat_id, msg.sender_name)
        if parse_channel(chat_id) is not None:  # a team's channel (bridge.teams.channels)
            what, call = await channels.send_to_channel(self.net, graph, relay, msg, self._call)
            posted = channels.sent_id(chat_id, await self._call(what, call))
            self.net.sent.add(posted)
            return posted
        content = body_html(msg.body, msg.html) if msg.media is None else ""
        image = file = None
        limit = self.net.cfg.max_file_mb * 1024 * 1024
        if msg.media is not None and msg.media.mimetype.startswith("image/"):
            image = (await read_within(msg.media, limit), msg.media.mimetype)
        elif msg.media is not None:  # into the acting account's OneDrive, shared with the chat
            file = await share_to_chat(
                graph, self._call, chat_id, msg.media, limit, self.net.ctx.store, msg.event_id
            )
        content, mentions = teams_mentions(
            content, await self._mention_resolver(graph, chat_id, content)
        )
        content = as_posted(msg, content, relay=relay)
        body = chat_message(
            content,
            reply_to=msg.reply_to,
            reply_text=msg.reply_to_text,
            image=image,
            mentions=mentions,
            file=file,
        )
        sent = await self._call(
            f"send to {chat_id}", graph.chats.by_chat_id(chat_id).messages.post(body)
        )
        if sent is None or not sent.id:
            # Not transient: trying again would post it again, for as long as that lasts.
            raise PermanentError(
                f"Graph accepted a message in {chat_id} without an id",
                user_message="Teams took this message but did not say which it is: edits,"
                " replies and reactions to it will not reach Teams.",
            )
        self.net.sent.add(sent.id)
        return RemoteMessageID(sent.id)

    async def handle_matrix_edit(self, edit: MatrixEdit) -> None:
        chat_id = edit.portal.remote_id
        graph, relay = await self._acting(chat_id, edit.sender_name)
        if parse_channel(chat_id) is not None:  # bridge.teams.channel_outbound
            await self._call(*await channel_outbound.edit_call(self.net, graph, relay, edit))
            return
        content = body_html(edit.body, edit.html)
        content, mentions = teams_mentions(
            content, await self._mention_resolver(graph, chat_id, content)
        )
        content = as_posted(edit, content, relay=relay)
        item = graph.chats.by_chat_id(chat_id).messages.by_chat_message_id(edit.target.remote_id)
        await self._call(
            f"edit {edit.target.remote_id}", item.patch(edited_message(content, mentions))
        )

    async def _mention_resolver(
        self, graph: GraphServiceClient, chat_id: str, content: str
    ) -> Resolve:
        """Who a Matrix pill names in Teams: a ghost's account, or a logged-in Matrix user's,
        if that account is a member of the chat, under the name Teams shows for it. A pill of
        anyone else (any ``@teams_<id>`` can be written) stays a link."""
        if not has_pills(content):
            return lambda mxid: None
        logins = {mxid: account for account, mxid in (await self.net.logged_in()).items()}
        parse = self.net.ctx.parse_ghost_mxid
        page = await self._call(
            f"read the members of {chat_id}", graph.chats.by_chat_id(chat_id).members.get()
        )
        members: dict[str, str] = {}
        for member in (page.value if page is not None else None) or []:
            account = getattr(member, "user_id", None) or (member.additional_data or {}).get(
                "userId"
            )
            if account:
                members[str(account).lower()] = member.display_name or ""

        def resolve(mxid: str) -> tuple[str, str] | None:
            account = parse(mxid) or logins.get(mxid)
            if account is None or str(account).lower() not in members:
                return None
            return str(account), members[str(account).lower()]

        return resolve

    async def handle_matrix_redaction(self, redaction: MatrixRedaction) -> None:
        chat_id = redaction.portal.remote_id
        graph, _ = await self._acting(chat_id, redaction.sender_name)
        target = redaction.target.remote_id
        item = graph.chats.by_chat_id(chat_id).messages.by_chat_message_id(target)
        if parse_channel(chat_id) is not None:
            item = await channel_outbound.target_item(self.net, graph, redaction.target)
        await self._call(f"delete {target}", item.soft_delete.post())

    async def handle_matrix_reaction(self, reaction: MatrixReaction) -> None:
        graph, relay = await self._reacting(reaction.portal.remote_id, reaction.sender_name)
        if relay:
            await self._relay_reactions().react(graph, reaction)
            return
        target = reaction.target.remote_id
        item = graph.chats.by_chat_id(reaction.portal.remote_id).messages.by_chat_message_id(target)
        if parse_channel(reaction.portal.remote_id) is not None:
            item = await channel_outbound.target_item(self.net, graph, reaction.target)
        body = SetReactionPostRequestBody(reaction_type=reaction.emoji)
        await self._call(f"react to {target}", item.set_reaction.post(body))

    async def handle_matrix_reaction_remove(self, removal: MatrixReactionRemove) -> None:
        graph, relay = await self._reacting(removal.portal.remote_id, removal.sender_name)
        if relay:
            await self._relay_reactions().unreact(graph, removal)
            return
        target = removal.target.message_id
        item = graph.chats.by_chat_id(removal.portal.remote_id).messages.by_chat_message_id(target)
        if parse_channel(removal.portal.remote_id) is not None:
            item = await channel_outbound.item_by_id(self.net, graph, removal.portal.key, target)
        body = UnsetReactionPostRequestBody(reaction_type=removal.target.emoji)
        await self._call(f"unreact on {target}", item.unset_reaction.post(body))

    async def _reacting(self, chat_id: str, sender_name: str) -> tuple[GraphServiceClient, bool]:
        return await self._acting(chat_id, sender_name)

    def _relay_reactions(self) -> RelayReactions:
        """How the relay account shows the reactions of the Matrix users it speaks for."""
        raise NotSupported("reaction through the relay account", user_message=NEEDS_LOGIN)

    async def _call(self, what: str, call: Awaitable[T]) -> T:
        try:
            return await graph_call(what, call, delegated=self.delegated)
        finally:
            await self._after_call()

    async def _after_call(self) -> None:
        return None

    # --- reading, with the tenant's app token ----------------------------------------------

    async def get_chat_info(self, portal: PortalKey) -> ChatInfo:
        if parse_channel(portal.remote_id) is not None:
            return await channels.channel_info(self.net, portal)
        chat_id = portal.remote_id
        link = await self.net.tenant_for_chat(chat_id)
        chat = await graph_call(f"read chat {chat_id}", link.app.chats.by_chat_id(chat_id).get())
        members = await graph_call(
            f"read members of {chat_id}", link.app.chats.by_chat_id(chat_id).members.get()
        )
        logins = await self.net.logged_in()
        relays = self.net.relay_ids()
        matrix_users: list[str] = []
        ghosts: list[RemoteUserID] = []
        accounts: list[RemoteUserID] = []
        for member in (members.value if members is not None else None) or []:
            raw = getattr(member, "user_id", None) or (member.additional_data or {}).get("userId")
            if not raw:
                continue
            aad = user_id(str(raw))
            accounts.append(aad)
            if aad in logins:
                matrix_users.append(logins[aad])
            elif aad not in relays:
                ghosts.append(aad)
        direct = chat is not None and chat.chat_type == ChatType.OneOnOne
        await member_sync.seen(self.net, chat_id, accounts)  # who a later removal concerns
        owner = await self.net.ctx.store.kv_get(group_chats.relay_owner_key(chat_id))
        if owner:  # the relay's chat for one Matrix user (bridge.teams.group_chats)
            matrix_users += [] if owner in matrix_users else [owner]
            direct = len(ghosts) == 1
        return ChatInfo(
            name=None if chat is None or direct else chat.topic,
            is_direct=direct,
            matrix_users=matrix_users,
            members=ghosts,
        )

    # --- people and new chats (bridge.teams.directory) -------------------------------------

    async def search_users(
        self, query: str, matrix_user: str
    ) -> list[tuple[RemoteUserID, UserInfo]]:
        """The people of the tenants ``bridge.federation`` lets ``matrix_user`` reach."""
        policy = self.net.ctx.federation
        links = [
            link
            for link in self._directories()
            if policy.allows(NETWORK, link.tenant.tenant_id, matrix_user)
        ]
        return await directory.search(self.net, links, query) if links else []

    async def start_direct_chat(self, user: RemoteUserID, matrix_user: str) -> PortalKey:
        """``start-chat teams <person>``: the one-on-one chat of the acting account and the
        person, if ``bridge.federation`` lets the person's tenant and ``matrix_user`` meet."""
        link = await directory.tenant_of(self.net, user)
        directory.check_policy(self.net, link, matrix_user)
        graph, me = self._chat_opener(link)
        if not self.delegated:  # through the relay: a chat of this Matrix user's own
            chat_id = await group_chats.relay_chat(self.net, link, user, matrix_user)
            return portal_key(chat_id)
        chat_id = await directory.open_chat(link, graph, me, user, self.delegated)
        await self.net.remember_chat(chat_id, link.id)
        return portal_key(chat_id)

    async def handle_matrix_invite(
        self, portal: Portal, inviter: str, user: RemoteUserID
    ) -> PortalKey | None:
        """A Teams ghost invited into a portal room: add the person to the group chat, or
        make a group chat of a one-on-one chat's people and them (the room's new chat)."""
        graph, relay = await self._acting(portal.remote_id, "")
        if await members.add_member(
            self.net, graph, portal.remote_id, user, inviter, delegated=self.delegated
        ):
            return None
        link = await self.net.tenant_for_chat(portal.remote_id)
        graph, me = self._chat_opener(link)
        return await group_chats.widen(
            self.net, graph, me, portal.remote_id, user, inviter, relay=relay
        )

    async def handle_matrix_kick(self, kick: MatrixKick) -> None:
        """A Matrix moderator removed a Teams ghost: the person leaves the Teams chat only if
        the moderator's own Teams account may remove them (Teams decides); else they are told
        the person is still in the Teams chat."""
        person = self.net.ctx.parse_ghost_mxid(kick.target)
        if person is None or kick.unban:
            return
        if kick.relayed or not self.delegated:
            raise NotSupported(
                f"kick of {person} without a Teams login",
                user_message="They are still in the Teams chat: only a member of it, with their"
                " own Teams account, can remove people there. Send `login teams` to the bridge"
                " bot, then remove them again.",
            )
        graph, _ = await self._acting(kick.portal.remote_id, "")
        await members.remove(self.net, graph, self.login_id, kick.portal.remote_id, person)

    async def handle_matrix_membership(self, change: MatrixMembership) -> None:
        """A Matrix user's own join or leave: their own Teams login's membership of a group
        chat follows it (bridge.teams.matrix_members); a relay user has none to change."""
        await matrix_members.membership_changed(self.net, change)

    async def bridge_room(self, remote_id: str, matrix_user: str) -> tuple[PortalKey, ChatInfo]:
        """``bridge teams <channel link>``: that channel, in this room (bridge.teams.channels)."""
        assert self.net.channel_subscriptions is not None, "bridge_room before start"
        return await channels.bridge_channel(
            self.net, self.net.channel_subscriptions, self._own_login(), remote_id, matrix_user
        )

    async def group_chats(self, group: str, matrix_user: str) -> list[GroupChat]:
        """``bridge-team teams <team link>``: the team's channels (bridge.teams.team_bridging)."""
        return await team_bridging.team_channels(self.net, self._own_login(), group, matrix_user)

    def _own_login(self) -> tuple[TenantLink, GraphServiceClient] | None:
        """The tenant and Graph client of the acting Matrix user's own Teams login."""
        return None

    def _directories(self) -> list[TenantLink]:
        raise NotImplementedError

    def _chat_opener(self, link: TenantLink) -> tuple[GraphServiceClient, str]:
        """The Graph client and the member id that open a chat with a person of ``link``."""
        raise NotImplementedError

    async def get_user_info(self, user: RemoteUserID) -> UserInfo:
        """Name and photo; a profile Graph does not give (gone, another tenant's, Graph away)
        is no profile, so the ghost is made anyway and its name filled in later."""
        for link in self.net.tenants.values():
            try:
                found = await graph_call(f"read user {user}", link.app.users.by_user_id(user).get())
            except Exception:
                continue
            if found is not None:
                name = ghost_name(found.display_name, link.tenant.display_name)
                return await link.photos.profile(user, name)
        return UserInfo()


Converter = Callable[[RemoteInput], Awaitable[Sequence[RemoteEvent]]]


class TeamsSharedClient(_TeamsActions):
    login_id = LoginID("")
    delegated = False

    def __init__(self, net: TeamsNetwork) -> None:
        self.net = net
        self.converter: Converter | None = None
        """Turns stored notifications into events (``Inbound.convert``), set at start."""
        self._reactions = RelayReactions(net)

    async def convert_remote(self, item: RemoteInput) -> Sequence[RemoteEvent]:
        """What the webhook kept (``Inbound.accept``), as events, in the portal's queue."""
        if self.converter is None:
            raise TransientError("the Teams connector is still starting")
        return await self.converter(item)

    async def connect(self) -> None:
        problems = []
        for link in self.net.tenants.values():
            try:
                await link.app_tokens.token()
            except Exception as err:
                problems.append(f"tenant {link.id}: {as_bridge_error(err, 'app token')}")
        self.net.ctx.set_client_state(
            self.login_id, connected=not problems, message="; ".join(problems)
        )

    async def disconnect(self) -> None:
        return None

    async def _acting(self, chat_id: str, sender_name: str) -> tuple[GraphServiceClient, bool]:
        link = await self.net.tenant_for_chat(chat_id)
        if link.relay is None:
            raise NotSupported(f"no relay account for tenant {link.id}", user_message=NEEDS_LOGIN)
        return link.relay, True

    def _relay_reactions(self) -> RelayReactions:
        return self._reactions

    def _directories(self) -> list[TenantLink]:
        return list(self.net.tenants.values())

    def _chat_opener(self, link: TenantLink) -> tuple[GraphServiceClient, str]:
        # Without a login of their own, the Matrix user writes through the relay account.
        if link.relay is None or not link.relay_user_id:
            raise NotSupported(f"no relay account for tenant {link.id}", user_message=NEEDS_LOGIN)
        return link.relay, link.relay_user_id


class TeamsUserClient(_TeamsActions):
    def __init__(self, net: TeamsNetwork, login: Login) -> None:
        self.net = net
        self.login = login
        self.login_id = login.login_id
        tenant_id = str(login.metadata.get("tenant_id", ""))
        # A login of a tenant the operator removed gets no client at all: its tokens belong to
        # that tenant, and no other tenant's authority or Graph may be tried with them.
        self._link = net.tenant(tenant_id)
        self._gone = f"tenant {tenant_id or '(none)'} is no longer configured on this bridge"
        self._tokens: MsalTokenProvider | None = None
        self._graph: GraphServiceClient | None = None
        if self._link is not None:
            # MSAL's token cache, sealed in the login's metadata; renewed refresh tokens kept.
            sign_in = LoginSignIn(net.cfg, self._link.tenant, login.metadata, self._save_login)
            self._tokens = sign_in.provider
            self._graph = self._link.graph(self._tokens)
            net.login_graphs[self.login_id] = self._graph

    async def connect(self) -> None:
        if self._tokens is None:
            self.net.ctx.set_client_state(self.login_id, connected=False, message=self._gone)
            return
        try:
            await self._tokens.token()
        except TokenError as err:
            message = f"login expired ({err.error}): send `login teams` again"
            self.net.ctx.set_client_state(self.login_id, connected=False, message=message)
            return
        except Exception as err:
            self.net.ctx.set_client_state(self.login_id, connected=False, message=str(err))
            return
        self.net.ctx.set_client_state(self.login_id, connected=True)

    async def disconnect(self) -> None:
        return None

    async def logout_remote(self) -> None:
        """``logout teams``: the hub stops being told of this account's chats at once."""
        if self._link is not None:
            await self._link.unwatch(self.login_id)
        if self._graph is not None and self.net.login_graphs.get(self.login_id) is self._graph:
            del self.net.login_graphs[self.login_id]  # a newer login's client stays

    def _own_graph(self) -> GraphServiceClient:
        if self._graph is None:
            raise NotSupported(self._gone, user_message=f"Your Teams login's {self._gone}.")
        return self._graph

    async def _acting(self, chat_id: str, sender_name: str) -> tuple[GraphServiceClient, bool]:
        return self._own_graph(), False

    def _directories(self) -> list[TenantLink]:
        return [self._link] if self._link is not None else []

    def _own_login(self) -> tuple[TenantLink, GraphServiceClient] | None:
        if self._link is None or self._graph is None:
            return None
        return self._link, self._graph

    def _chat_opener(self, link: TenantLink) -> tuple[GraphServiceClient, str]:
        graph = self._own_graph()
        if link is not self._link:
            raise NotSupported(
                f"{link.id} is not the tenant of login {self.login_id}",
                user_message="That person is in another organisation than your Teams account;"
                " Teams chats across organisations cannot be opened from here.",
            )
        return graph, self.login_id

    async def _save_login(self) -> None:
        """Refresh tokens rotate: keep the newest, or the login dies at the next restart."""
        await self.net.ctx.store.save_login(self.login)
