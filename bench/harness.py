"""One Synapse, one Prosody, Postfix and Dovecot, the reference network and the real bridge
process, wired like the e2e tests.

This mirrors the session fixture in ``tests/e2e/conftest.py`` as a plain async context manager
and reuses the harness's parts (:class:`SynapseServer`, :class:`ProsodyServer`,
:class:`MailServers`, :class:`BridgeProcess`); the config is the benchmark's own
(:mod:`bench.config`). The bridge's mail relay is the benchmark's own SMTP sink
(:class:`~bench.mail.TimedMailSink`), so outgoing mail is timestamped where it leaves the bridge;
Postfix relays incoming mail to the bridge's LMTP port. Postfix and Dovecot need root: without
it the mail-in-through-Postfix path is skipped (see :attr:`BenchHub.mail_missing`). The Graph
emulator (:class:`~bench.graph.TimedGraphEmulator`) stands in for Microsoft Graph, in this
process.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench.config import (
    DOMAIN,
    MAIL_DOMAIN,
    XMPP_SECRET,
    email_connector,
    write_config,
    xmpp_connector,
)
from bench.graph import TimedGraphEmulator
from bench.mail import TimedMailSink
from bench.source import snapshot
from bench.timing import TimedMatrixUser, TimedRemoteNetwork, TimedXmppUser
from tests.e2e.hub import XMPP_COMPONENT, XMPP_ROOMS, BridgeProcess, install_reference_entry_point
from tests.e2e.mail import MailServers, mail_servers_missing
from tests.e2e.process import free_port
from tests.e2e.prosody import ProsodyServer
from tests.e2e.synapse import SynapseServer

XMPP_CLIENT = "xmpp/shared"
"""The XMPP connector's shared client in ``/_pontis/health``."""


async def stop_bridge(bridge: BridgeProcess) -> None:
    """``bridge.stop()`` without blocking the event loop: the bridge's shutdown talks to
    servers that run in this process (the reference network, the PostgreSQL proxy)."""
    await asyncio.to_thread(bridge.stop)


async def wait_component(as_port: int, wait_seconds: float = 30) -> None:
    """Until the bridge's health report says its XMPP component is connected to Prosody (the
    bridge is ready before that: the component connects in the background)."""
    deadline = time.monotonic() + wait_seconds
    url = f"http://127.0.0.1:{as_port}/_pontis/health"
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(url) as resp:
                    if (await resp.json()).get("clients", {}).get(XMPP_CLIENT):
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError(f"the bridge's XMPP component did not connect within {wait_seconds} s")


@dataclass
class BenchHub:
    synapse: SynapseServer
    bridge: BridgeProcess
    remote: TimedRemoteNetwork
    prosody: ProsodyServer
    mail_sink: TimedMailSink
    """The bridge's SMTP relay."""
    mail: MailServers | None
    """Postfix (relaying mail for the bridge's domain to its LMTP port) and Dovecot."""
    mail_missing: str | None
    """Why ``mail`` is None."""
    lmtp_port: int
    """Where the bridge receives mail."""
    workdir: Path
    config_path: Path
    site_dir: Path
    as_port: int
    revision: str
    graph: TimedGraphEmulator
    """The Graph emulator (Microsoft Graph for the Teams connector), in this process."""
    users: list[TimedMatrixUser] = field(default_factory=list)
    xmpp_users: list[TimedXmppUser] = field(default_factory=list)
    _chats: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def bridge_pid(self) -> int:
        assert self.bridge.proc is not None, "the bridge is not running"
        return self.bridge.proc.pid

    @property
    def synapse_pid(self) -> int:
        # SynapseServer keeps its Popen private and Synapse writes no pid file in the foreground.
        process = self.synapse._process
        assert process is not None, "Synapse is not running"
        return process.pid

    @property
    def prosody_pid(self) -> int:
        # Like Synapse: the Popen is private. As root it is setpriv, which execs Prosody.
        process = self.prosody._process
        assert process is not None, "Prosody is not running"
        return process.pid

    async def user(self, localpart: str, *, sync: bool = True) -> TimedMatrixUser:
        mxid, token = await self.synapse.register_user(localpart, displayname=localpart.title())
        user = TimedMatrixUser(mxid, token, self.synapse.base_url)
        if sync:
            await user.start_sync()
        self.users.append(user)
        return user

    async def xmpp_user(self, localpart: str) -> TimedXmppUser:
        """A new account on Prosody, logged in (initial presence sent)."""
        user = TimedXmppUser(self.prosody.register(localpart), "pw", self.prosody.c2s_port)
        await user.connect()
        self.xmpp_users.append(user)
        return user

    def chat_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._chats)}"

    def other_bridge(self, name: str, database_url: str) -> BridgeProcess:
        """A bridge process with the same config and registration on another database.

        Start it on ``as_port`` only while the main bridge is stopped.
        """
        workdir = self.workdir / name
        workdir.mkdir(exist_ok=True)
        env = {**self.bridge.env, "PONTIS_DATABASE": database_url}
        return BridgeProcess(workdir, self.config_path, self.site_dir, env=env)

    async def close(self) -> None:
        for user in self.users:
            await user.close()
        for xmpp_user in self.xmpp_users:
            await xmpp_user.close()
        await stop_bridge(self.bridge)
        await self.synapse.stop()
        await self.prosody.stop()
        if self.mail is not None:
            await self.mail.stop()
        await self.mail_sink.stop()
        await self.graph.stop()
        await self.remote.stop()


@asynccontextmanager
async def running_hub(workdir: Path, source: str) -> AsyncIterator[BenchHub]:
    """Everything started; the bridge runs the code of ``source`` (see :mod:`bench.source`),
    whose revision ends up in ``hub.revision``."""
    remote = TimedRemoteNetwork()
    await remote.start()
    # INFO, not the e2e default DEBUG: Prosody would otherwise spend its time logging stanzas.
    prosody = ProsodyServer(
        workdir / "prosody",
        components={XMPP_COMPONENT: XMPP_SECRET, XMPP_ROOMS: XMPP_SECRET},
        log_level="info",
    )
    mail_sink = TimedMailSink()
    await mail_sink.start()
    graph = TimedGraphEmulator()
    await graph.start()
    lmtp_port = free_port()
    mail_missing = mail_servers_missing()
    mail = None
    if mail_missing is None:
        mail = MailServers(workdir / "mail", bridge_domain=MAIL_DOMAIN, bridge_lmtp_port=lmtp_port)
    site_dir = workdir / "site"
    revision = snapshot(site_dir, source)
    install_reference_entry_point(site_dir)
    as_port, metrics_port = free_port(), free_port()
    config_path = workdir / "config.yaml"
    connectors = {
        "reference": {"enabled": True, "url": remote.url},
        "xmpp": xmpp_connector(
            component_port=prosody.component_port, upload_service=prosody.upload_domain
        ),
        "email": email_connector(lmtp_port=lmtp_port, relay_port=mail_sink.port),
        "teams": graph.teams_section(f"http://127.0.0.1:{as_port}"),  # webhook on the AS port
    }
    write_config(config_path, as_port=as_port, metrics_port=metrics_port, connectors=connectors)
    bridge = BridgeProcess(workdir, config_path, site_dir, env={})
    registration = workdir / "registration.yaml"
    result = bridge.cli("generate-registration", "-r", str(registration))
    if result.returncode != 0:
        await remote.stop()
        await mail_sink.stop()
        await graph.stop()
        raise RuntimeError(f"generate-registration failed:\n{result.stderr}")
    synapse = SynapseServer(DOMAIN, workdir / "synapse", [registration])
    hub = BenchHub(
        synapse, bridge, remote, prosody, mail_sink, mail, mail_missing, lmtp_port, workdir,
        config_path, site_dir, as_port, revision, graph,
    )  # fmt: skip
    try:
        await prosody.start()  # before the bridge, whose component connects to it
        if mail is not None:
            await mail.start()
        await synapse.start()
        bridge.env["PONTIS_HOMESERVER_ADDRESS"] = synapse.base_url
        await bridge.start(as_port)
        await remote.wait_connected()
        await wait_component(as_port)
        yield hub
    finally:
        await hub.close()
