"""The portals, logins and dead letters one admin's :class:`~bridge.core.agencies.Scope`
holds, read from the store: what ``list-portals all``, ``delete-portal``, ``list-logins all``
and the dead-letter commands (and their provisioning endpoints) may show and change.

Outside the scope is the same as absent: an agency admin asking for another agency's portal or
dead letter is told there is none, so nothing about it leaks.
"""

from __future__ import annotations

from collections.abc import Collection

from bridge.core.agencies import Agency, Scope
from bridge.core.ids import LoginID, NetworkID, PortalKey, RemoteChatID
from bridge.portal.dead_letters import Letter
from bridge.portal.models import Login, Portal
from bridge.portal.store import Store

LETTERS_READ = 10_000
"""Dead letters an agency admin's listing looks through (retention keeps far fewer)."""


class AgencyView:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def portals(self, scope: Scope) -> list[Portal]:
        portals = await self._store.list_portals()
        if scope.everything:
            return portals
        users = await self._store.portal_users()
        owners = await self._owners()
        return [p for p in portals if self._covers(scope, p.key, users, owners)]

    async def has_portal(self, scope: Scope, portal: Portal) -> bool:
        if scope.everything:
            return True
        return self._covers(
            scope, portal.key, await self._store.portal_users(), await self._owners()
        )

    async def shared_with(
        self, scope: Scope, portal: Portal, agencies: Collection[Agency]
    ) -> list[str]:
        """The agencies outside ``scope`` that the portal belongs to as well: what one agency's
        admin may see of a shared portal, but must not destroy for the others."""
        if scope.everything:
            return []
        users = await self._store.portal_users()
        owners = await self._owners()
        return [
            agency.name
            for agency in agencies
            if agency not in scope.agencies
            and self._covers(Scope(agencies=(agency,)), portal.key, users, owners)
        ]

    async def logins(self, scope: Scope) -> list[Login]:
        logins = await self._store.list_logins()
        return [
            login
            for login in logins
            if scope.covers_login(login.network, login.user_mxid, *_accounts(login))
        ]

    async def has_login(self, scope: Scope, login: Login) -> bool:
        return scope.covers_login(login.network, login.user_mxid, *_accounts(login))

    async def letters(self, scope: Scope, limit: int) -> tuple[list[Letter], int]:
        """The newest ``limit`` dead letters in scope, and how many there are in all."""
        dead = self._store.dead_letters
        if scope.everything:
            return await dead.newest(limit), await dead.count()
        mine = await self._letters_in(scope, await dead.newest(LETTERS_READ))
        return mine[:limit], len(mine)

    async def has_letter(self, scope: Scope, letter_id: int) -> bool:
        if scope.everything:
            return True
        letter = await self._store.dead_letters.get(letter_id)
        return letter is not None and bool(await self._letters_in(scope, [letter]))

    async def letter_ids(self, scope: Scope) -> list[int] | None:
        """The ids ``retry all`` / ``drop all`` may touch; None: every one."""
        if scope.everything:
            return None
        letters, _ = await self.letters(scope, LETTERS_READ)
        return [letter.id for letter in letters]

    async def _letters_in(self, scope: Scope, letters: list[Letter]) -> list[Letter]:
        users = await self._store.portal_users()
        owners = await self._owners()
        return [
            letter
            for letter in letters
            if letter.network
            and letter.portal_id
            and self._covers(
                scope,
                PortalKey(
                    NetworkID(letter.network),
                    RemoteChatID(letter.portal_id),
                    LoginID(letter.receiver or ""),
                ),
                users,
                owners,
            )
        ]

    async def _owners(self) -> dict[tuple[str, str], str]:
        return {(lg.network, lg.login_id): lg.user_mxid for lg in await self._store.list_logins()}

    @staticmethod
    def _covers(
        scope: Scope,
        key: PortalKey,
        users: dict[PortalKey, list[str]],
        owners: dict[tuple[str, str], str],
    ) -> bool:
        owner = owners.get((key.network, key.receiver)) if key.receiver else None
        return scope.covers_portal(key.network, key.remote_id, users.get(key, ()), owner)


def _accounts(login: Login) -> tuple[str, ...]:
    """What names a login's remote account for ``networks``: its id (an address, a JID) and a
    tenant the connector recorded, never its display name, which its owner chooses."""
    tenant = login.metadata.get("tenant_id")
    return (login.login_id, tenant) if isinstance(tenant, str) and tenant else (login.login_id,)
