"""The email connector: a mail gateway behind the agency's mail server.

Besides the gateway it keeps, per portal, the contacts who receive new conversations
(:class:`~bridge.core.SupportsContacts`: the core's ``email contacts`` command and provisioning
endpoints land here) and prunes the mail records past their retention.
"""

from __future__ import annotations

import asyncio
from typing import Any

from mautrix.util.async_db import Database

from bridge.core import (
    Capabilities,
    ConnectorContext,
    Contact,
    LoginFlow,
    LoginProcess,
    NetworkClient,
    NetworkInfo,
    NotSupported,
    PermanentError,
    PortalKey,
    RemoteUserID,
)
from bridge.email import records_cli
from bridge.email.client import TOO_MANY_CONTACTS, EmailGateway
from bridge.email.config import EXAMPLE_CONFIG, EmailConfig
from bridge.email.ids import NETWORK
from bridge.email.inbound import start_listener
from bridge.email.outbound import Relay
from bridge.email.protocol.addresses import InvalidAddress, normalize_address, split_address
from bridge.email.records import Records, prune_forever
from bridge.email.resolver import probe
from bridge.email.store import EmailStore
from bridge.portal.models import Login


class EmailConnector:
    info = NetworkInfo(id=NETWORK, display_name="Email")
    example_config = EXAMPLE_CONFIG

    def __init__(self) -> None:
        self._listener: asyncio.Server | None = None
        self._relay: Relay | None = None
        self._store: EmailStore | None = None
        self._domain = ""

    def capabilities(self) -> Capabilities:
        return Capabilities(replies=True, threads=True, media=True, html=True)

    async def start(self, ctx: ConnectorContext) -> None:
        cfg = EmailConfig.from_section(ctx.config)
        if problems := cfg.problems():
            raise PermanentError("; ".join(problems))
        store = EmailStore(ctx.store.database)
        await store.upgrade()
        self._store, self._domain = store, cfg.domain
        self._relay = Relay(cfg)
        gateway = EmailGateway(ctx, cfg, store, self._relay)
        ctx.add_client(gateway)
        try:
            self._listener = await start_listener(gateway, cfg, ctx.log)
        except OSError as err:
            where = f"{cfg.listen_host}:{cfg.listen_port}"
            message = f"connectors.email.inbound: cannot listen on {where}: {err}"
            raise PermanentError(message) from err
        ctx.log.info("Receiving mail for %s over %s on %s:%s",
                     cfg.domain, cfg.protocol.upper(), cfg.listen_host, cfg.listen_port)  # fmt: skip
        ctx.background(gateway.connect(), name="relay-check")
        if cfg.records_keep_days:
            ctx.background(
                prune_forever(Records(store), cfg.records_keep_days, ctx.log), name="records"
            )

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
            await self._listener.wait_closed()
        if self._relay is not None:
            await self._relay.close()  # QUIT the sessions kept open for the next mails

    async def check(self, section: dict[str, Any]) -> list[str]:
        cfg = EmailConfig.from_section(section)
        problems = cfg.problems()
        if (relay := await Relay(cfg).check()) is not None:
            problems.append(f"connectors.email.outbound: {relay}")
        if cfg.verifier == "bridge" and cfg.sender_verification != "none":
            dns = await probe(cfg.dns_nameservers, f"_dmarc.{cfg.domain}", wait=cfg.dns_timeout)
            if dns is not None:
                problems.append(f"connectors.email.dns: {dns}")
        return problems

    def login_flows(self) -> list[LoginFlow]:
        return []  # Matrix users need no mailbox: they write from their portals' addresses

    async def start_login(self, user_mxid: str, flow_id: str) -> LoginProcess:
        raise NotSupported("email has no logins", user_message="Email needs no login.")

    async def load_login(self, login: Login) -> NetworkClient:
        raise NotSupported(f"unexpected email login {login.login_id}")

    async def run_cli(self, args: list[str], section: dict[str, Any], database: Database) -> int:
        """``pontis email …`` (SupportsCli): see :mod:`bridge.email.records_cli`."""
        return await records_cli.run(args, database)

    # --- contacts (SupportsContacts) -----------------------------------------------------------

    def _started(self) -> EmailStore:
        if self._store is None:
            raise NotSupported("email connector not started")
        return self._store

    async def list_contacts(self, portal: PortalKey) -> list[Contact]:
        rows = await self._started().contacts(portal.remote_id)
        return [Contact(RemoteUserID(row.address), stopped=row.bounced) for row in rows]

    async def add_contact(self, portal: PortalKey, remote_id: str) -> Contact:
        try:
            address = normalize_address(remote_id)
        except InvalidAddress as err:
            raise PermanentError(f"bad contact {remote_id[:80]!r}", user_message=str(err)) from err
        if split_address(address)[1] == self._domain:
            raise PermanentError(f"own-domain contact {address}", user_message=(
                "That address belongs to the bridge itself: a room cannot mail a room."
            ))  # fmt: skip
        if not await self._started().add_contact(portal.remote_id, address):
            raise PermanentError(f"too many contacts in {portal.remote_id}",
                                 user_message=TOO_MANY_CONTACTS)  # fmt: skip
        return Contact(RemoteUserID(address))

    async def remove_contact(self, portal: PortalKey, remote_id: str) -> bool:
        try:
            address = normalize_address(remote_id)
        except InvalidAddress:
            return False  # never a contact
        return await self._started().remove_contact(portal.remote_id, address)
