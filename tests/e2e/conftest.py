"""One Synapse and one bridge process for the end-to-end tests, shared by the session.

The registration is written by ``pontis generate-registration`` before Synapse starts, exactly as
an operator would do it; the homeserver address is then given to the bridge through the
``PONTIS_HOMESERVER_ADDRESS`` environment override.
"""

from __future__ import annotations

import functools
import itertools
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from ruamel.yaml import YAML

from tests.e2e.ejabberd import EjabberdServer
from tests.e2e.graph import GraphEmulator
from tests.e2e.hub import (
    XMPP_COMPONENT,
    XMPP_ROOMS,
    BridgeProcess,
    install_reference_entry_point,
    write_bridge_config,
    xmpp_section,
)
from tests.e2e.mail import MailServers
from tests.e2e.matrix_client import MatrixUser
from tests.e2e.nio_user import EncryptedUser
from tests.e2e.process import free_port
from tests.e2e.prosody import ProsodyServer
from tests.e2e.synapse import SynapseServer
from tests.reference.remote import RemoteNetwork

DOMAIN = "hub.test"
ADMIN = "hubadmin"
"""Localpart of the bridge admin (``admin`` in bridge.permissions)."""


AGENCIES = {
    name: {"matrix": [f"@{name}-staff:{DOMAIN}"], "admins": [f"@{name}-it:{DOMAIN}"]}
    for name in ("north", "south")
}
"""Two agencies of the hub's own users, each with its IT admin (tests/e2e/test_agencies.py)."""

XMPP_SECRET = "component-secret-for-tests"
MAIL_DOMAIN = "hub-mail.test"
"""The bridge's mail domain: Postfix hands its mail to the bridge over LMTP."""
MAIL_AUTHSERV_ID = "mx.agency.test"
"""The authserv-id the bridge trusts, as if the agency's MX ran a DMARC milter."""
SMIME_CA = Path(__file__).resolve().parents[1] / "email" / "data" / "smime" / "ca.pem"
"""The CA the bridge trusts for S/MIME signatures (test-only; see its README)."""
XMPP_STRANGER_DOMAIN = "stranger.test"
"""An XMPP domain of the test Prosody that no rule of the hub's federation policy allows."""
XMPP_PARTNER_DOMAIN = "partner.test"
"""An XMPP domain of the test Prosody that the policy connects with ``OTHER_MATRIX_SERVER``
only, not with the users of this homeserver."""
OTHER_MATRIX_SERVER = "other.example"

XmppServer = ProsodyServer | EjabberdServer
"""The XMPP server of a hub: both offer the same names (domains, ports, ``register``, ``start``,
``stop``, ``restart``), so a test uses ``hub.prosody`` whichever of them runs."""
XMPP_SERVERS = ("prosody", "ejabberd")
"""The XMPP servers the DM and MUC tests run against (``hub_for``)."""


def federation_rules(prosody: XmppServer) -> list[dict[str, Any]]:
    """``bridge.federation`` of the test hub, as an operator would open it: the default rule
    (remote people reach local users) for mail and Teams; for XMPP the test server's own domain
    and the bridge's hosted rooms (a Matrix message in one is checked against ``rooms_domain``),
    and the MUC service open to every Matrix server, so that its rooms are found by their
    aliases; the reference network open to every server for the same reason."""
    return [
        {"network": "email", "remote": ["*"], "matrix": ["local"]},
        {"network": "teams", "remote": ["*"], "matrix": ["local"]},
        {"network": "reference", "remote": ["*"], "matrix": ["*"]},
        {"network": "xmpp", "remote": [prosody.domain, XMPP_ROOMS], "matrix": ["local"]},
        {"network": "xmpp", "remote": [prosody.muc_domain], "matrix": ["*"]},
        {"network": "xmpp", "remote": [XMPP_PARTNER_DOMAIN], "matrix": [OTHER_MATRIX_SERVER]},
    ]


def write_config(
    path: Path,
    *,
    as_port: int,
    metrics_port: int,
    remote_url: str,
    prosody: XmppServer,
    mail: MailServers,
    graph: GraphEmulator,
    encryption: dict[str, Any] | None = None,
) -> None:
    xmpp = xmpp_section(
        component_port=prosody.component_port,
        secret=XMPP_SECRET,
        upload_service=prosody.upload_domain,
        upload_http_port=prosody.http_port,
    )
    write_bridge_config(
        path,
        domain=DOMAIN,
        as_port=as_port,
        metrics_port=metrics_port,
        connectors={
            "reference": {"enabled": True, "url": remote_url},
            "xmpp": xmpp | {"history_on_join": 20},
            "email": email_section(mail),
            # Graph reaches the webhook on the bridge's own port, as a reverse proxy would.
            "teams": graph.teams_section(f"http://127.0.0.1:{as_port}"),
        },
        bridge={
            "permissions": {
                DOMAIN: "user",
                f"@outsider:{DOMAIN}": "relay",
                f"@{ADMIN}:{DOMAIN}": "admin",
            },
            "retry": {"attempts": 6, "backoff_seconds": 0.5},
            "federation": federation_rules(prosody),
            "agencies": AGENCIES,
            # Rooms joined through an alias (#xmpp_room=40muc...) need public portals.
            "portals": {"public": True},
        },
        log_level="DEBUG",
        encryption=encryption,
    )


def email_section(mail: MailServers) -> dict[str, Any]:
    return {
        "enabled": True,
        "domain": MAIL_DOMAIN,
        "inbound": {"protocol": "lmtp", "host": "127.0.0.1", "port": mail.bridge_lmtp_port},
        "outbound": {"host": "127.0.0.1", "port": mail.smtp_port, "security": "none"},
        "trusted_authserv_id": MAIL_AUTHSERV_ID,
        "sender_verification": "dmarc",
        # The test CA that signed tests/email/data/smime/signer.pem (S/MIME "valid").
        "parsing": {"smime_trust_anchors": str(SMIME_CA)},
    }


@dataclass
class Hub:
    synapse: SynapseServer
    bridge: BridgeProcess
    remote: RemoteNetwork
    prosody: XmppServer
    """The hub's XMPP server: Prosody, or ejabberd in ``ejabberd_hub``."""
    mail: MailServers
    graph: GraphEmulator
    workdir: Path
    as_port: int
    metrics_port: int
    hs_token: str
    bot: str = f"@pontis:{DOMAIN}"
    users: list[MatrixUser] = field(default_factory=list)
    encrypted_users: list[EncryptedUser] = field(default_factory=list)
    _names: itertools.count[int] = field(default_factory=itertools.count)

    async def user(self, prefix: str = "user", *, localpart: str | None = None) -> MatrixUser:
        name = localpart or f"{prefix}{next(self._names)}"
        known = [u for u in self.users if u.mxid == f"@{name}:{DOMAIN}"]
        if known:  # a fixed localpart (@outsider) is registered once per hub
            return known[0]
        mxid, token = await self.synapse.register_user(name, displayname=name.capitalize())
        user = MatrixUser(mxid, token, self.synapse.base_url)
        await user.start_sync()
        self.users.append(user)
        return user

    async def encrypted_user(self, prefix: str = "user") -> EncryptedUser:
        """A user with an encrypting client (matrix-nio), who joins every invite."""
        name = f"{prefix}{next(self._names)}"
        user = await EncryptedUser.register(
            self.synapse, name, displayname=name.capitalize(), auto_join=True
        )
        self.encrypted_users.append(user)
        return user

    async def restart_bridge(self, *, kill: bool) -> None:
        if kill:
            self.bridge.kill()
        else:
            self.bridge.stop()
        await self.bridge.start(self.as_port)


@pytest_asyncio.fixture(scope="session")
async def remote() -> AsyncIterator[RemoteNetwork]:
    network = RemoteNetwork()
    await network.start()
    yield network
    await network.stop()


ENCRYPTION = {
    "allow": True,
    "default": True,
    # Short waits, so that a test of a key that never comes ends in seconds.
    "key_wait_seconds": 2,
    "key_request_seconds": 3,
}
"""``encryption:`` of the encrypted hub: portals encrypted as on public-sector homeservers."""


async def start_hub(
    workdir: Path,
    remote: RemoteNetwork,
    *,
    encrypted: bool = False,
    xmpp: str = "prosody",
    presence: bool = False,
) -> Hub:
    """Prosody (or ejabberd: ``xmpp``), the mail servers and the Graph emulator, then the
    registration, then Synapse, then the bridge; stops what it started if a later step fails.

    ``encrypted``: Synapse encrypts every new room (``encryption_enabled_by_default_for_room_type:
    all``) and the bridge has encryption on, with a pickle key that generate-registration made.
    """
    site_dir = workdir / "site"
    install_reference_entry_point(site_dir)
    as_port, metrics_port = free_port(), free_port()
    config_path = workdir / "config.yaml"
    server = EjabberdServer if xmpp == "ejabberd" else ProsodyServer
    prosody = server(
        workdir / xmpp,
        components={XMPP_COMPONENT: XMPP_SECRET, XMPP_ROOMS: XMPP_SECRET},
        extra_domains=(XMPP_STRANGER_DOMAIN, XMPP_PARTNER_DOMAIN),
    )
    mail = MailServers(workdir / "mail", bridge_domain=MAIL_DOMAIN, bridge_lmtp_port=free_port())
    graph = GraphEmulator()
    bridge = BridgeProcess(workdir, config_path, site_dir, env={})
    synapse = SynapseServer(DOMAIN, workdir / "synapse", [workdir / "registration.yaml"])
    if encrypted:
        synapse.extra_config["encryption_enabled_by_default_for_room_type"] = "all"
    if presence:  # off in every other hub, as on many large homeservers
        synapse.extra_config["presence"] = {"enabled": True}
    try:
        await prosody.start()
        await mail.start()
        await graph.start()
        write_config(
            config_path,
            as_port=as_port,
            metrics_port=metrics_port,
            remote_url=remote.url,
            prosody=prosody,
            mail=mail,
            graph=graph,
            encryption=ENCRYPTION if encrypted else None,
        )
        await bridge.register_and_start(synapse, as_port)
    except BaseException:
        bridge.stop()
        await synapse.stop()
        await prosody.stop()
        await mail.stop()
        await graph.stop()
        raise
    hs_token = YAML().load(config_path)["appservice"]["hs_token"]
    return Hub(
        synapse, bridge, remote, prosody, mail, graph, workdir, as_port, metrics_port, hs_token
    )


async def _running_hub(
    tmp_path_factory: pytest.TempPathFactory,
    remote: RemoteNetwork,
    *,
    encrypted: bool,
    xmpp: str = "prosody",
    presence: bool = False,
) -> AsyncIterator[Hub]:
    name = "encrypted-hub" if encrypted else "hub" if xmpp == "prosody" else f"{xmpp}-hub"
    name = "presence-hub" if presence else name
    start = functools.partial(start_hub, encrypted=encrypted, xmpp=xmpp, presence=presence)
    try:
        hub = await start(tmp_path_factory.mktemp(name), remote)
    except Exception as err:
        # Ports are picked free and bound a moment later by another process; on a busy machine
        # one can be taken in between. Once, with fresh ports; the reason stays visible.
        warnings.warn(f"starting the test hub failed once, retrying: {err}", stacklevel=1)
        hub = await start(tmp_path_factory.mktemp(name), remote)
    try:
        yield hub
    finally:
        for user in hub.users:
            await user.close()
        for encrypted_user in hub.encrypted_users:
            await encrypted_user.close()
        hub.bridge.stop()
        await hub.synapse.stop()
        await hub.prosody.stop()
        await hub.mail.stop()
        await hub.graph.stop()


@pytest_asyncio.fixture(scope="session")
async def prosody_hub(
    tmp_path_factory: pytest.TempPathFactory, remote: RemoteNetwork
) -> AsyncIterator[Hub]:
    async for running in _running_hub(tmp_path_factory, remote, encrypted=False):
        yield running


@pytest.fixture(scope="session")
def hub(prosody_hub: Hub) -> Hub:
    """The test hub (its XMPP server is Prosody). A module may override ``hub`` to run against
    both XMPP servers (``hub_for``); the session's hubs stay the same ones."""
    return prosody_hub


@pytest_asyncio.fixture(scope="session")
async def ejabberd_hub(
    tmp_path_factory: pytest.TempPathFactory, remote: RemoteNetwork
) -> AsyncIterator[Hub]:
    """A second hub whose XMPP server is ejabberd (tests/e2e/ejabberd.py) instead of Prosody,
    with the same domains, components and bridge config; started only by the tests that run
    against both servers (``hub_for``)."""
    async for running in _running_hub(tmp_path_factory, remote, encrypted=False, xmpp="ejabberd"):
        yield running


def hub_for(request: pytest.FixtureRequest) -> Hub:
    """The hub of the XMPP server in ``request.param`` (one of ``XMPP_SERVERS``).

    A test module runs its tests against both servers by overriding ``hub``::

        @pytest.fixture(params=XMPP_SERVERS)
        def hub(request: pytest.FixtureRequest) -> Hub:
            return hub_for(request)

    The hubs are fetched under their own names: an override that asked for the ``hub`` it
    overrides would make pytest tear the session's hub down and start a new one for each test.
    """
    name = "ejabberd_hub" if request.param == "ejabberd" else "prosody_hub"
    running: Hub = request.getfixturevalue(name)
    return running


@pytest_asyncio.fixture(scope="session")
async def presence_hub(
    tmp_path_factory: pytest.TempPathFactory, remote: RemoteNetwork
) -> AsyncIterator[Hub]:
    """A hub whose Synapse has presence on (every other hub has it off); with Prosody."""
    async for running in _running_hub(tmp_path_factory, remote, encrypted=False, presence=True):
        yield running


@pytest_asyncio.fixture(scope="session")
async def encrypted_hub(
    tmp_path_factory: pytest.TempPathFactory, remote: RemoteNetwork
) -> AsyncIterator[Hub]:
    """A second hub whose Synapse encrypts every room and whose bridge has encryption on."""
    async for running in _running_hub(tmp_path_factory, remote, encrypted=True):
        yield running


@pytest_asyncio.fixture(scope="session")
async def mail_servers(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[MailServers]:
    """Postfix and Dovecot (tests/e2e/mail.py): mailboxes at ``agency.test``, and mail for the
    bridge's domain ``hub-mail.test`` relayed over LMTP to ``mail_servers.bridge_lmtp_port``.

    That port is picked here because Postfix must know it when it starts; nothing listens on it
    until the bridge (or a test) does, and mail for the bridge waits in the queue meanwhile.
    """
    bridge_lmtp_port = free_port()

    async def start() -> MailServers:
        servers = MailServers(
            tmp_path_factory.mktemp("mail"),
            bridge_domain=MAIL_DOMAIN,
            bridge_lmtp_port=bridge_lmtp_port,
        )
        await servers.start()
        return servers

    try:
        servers = await start()
    except Exception as err:
        # As for the hub: a free port can be taken before the server binds it. Once more, with
        # fresh ports (start() stops what it started); the reason stays visible.
        warnings.warn(f"starting the mail servers failed once, retrying: {err}", stacklevel=1)
        servers = await start()
    try:
        yield servers
    finally:
        await servers.stop()
