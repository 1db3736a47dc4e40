"""The demo's servers: Synapse, Prosody, Postfix and Dovecot, the Graph emulator and the bridge,
all on 127.0.0.1, started with the end-to-end harness's own classes and stopped in one place.

The bridge is configured as an operator on a public-sector homeserver would have it: all three
connectors, and every room end-to-end encrypted (Synapse's
``encryption_enabled_by_default_for_room_type: all``, the bridge's ``encryption.default``).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from demo.loopback_mail import LoopbackMail
from tests.e2e.graph import GraphEmulator
from tests.e2e.hub import (
    XMPP_COMPONENT,
    XMPP_ROOMS,
    BridgeProcess,
    write_bridge_config,
    xmpp_section,
)
from tests.e2e.mail import MailServers, mail_servers_missing
from tests.e2e.process import free_port
from tests.e2e.prosody import ProsodyServer, prosody_installed
from tests.e2e.synapse import SynapseServer

DOMAIN = "demo.test"
"""The homeserver's server_name: the demo user is ``@demo:demo.test``."""
MAIL_DOMAIN = "hub-mail.demo.test"
"""The bridge's mail domain: Postfix relays mail for it to the bridge over LMTP."""
XMPP_SECRET = "demo-component-secret"
SYNAPSE_PORT = 8008
"""Synapse's port when it is free, so a Matrix client keeps its homeserver URL across runs."""


MARKER = ".pontis-demo"
"""The file that marks a directory as the demo's own, which it may empty."""


def clear_workdir(workdir: Path) -> None:
    """Refuse to empty a directory the demo did not make (``--workdir ~`` by mistake): only a
    missing or empty one, or one holding :data:`MARKER`, is taken."""
    if workdir.exists() and any(workdir.iterdir()) and not (workdir / MARKER).exists():
        raise RuntimeError(
            f"{workdir} is not empty and was not made by the demo (no {MARKER} in it); "
            "give --workdir a new or empty directory"
        )


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def missing_prerequisites(mail: str = "auto") -> list[str]:
    """What this machine lacks for the demo, each with what to do (empty when it can run).
    ``mail``: ``postfix`` needs Postfix and Dovecot; ``auto`` and ``loopback`` run without."""
    problems = []
    if not prosody_installed():
        problems.append("Prosody is not installed: run ./scripts/demo.sh, which installs it")
    missing = mail_servers_missing()
    if mail == "postfix" and missing:
        problems.append(missing.replace("./scripts/test.sh", "./scripts/demo.sh"))
    return problems


def use_postfix(mail: str) -> bool:
    """Postfix and Dovecot when asked for, or (``auto``) when they can run here; else the
    aiosmtpd stand-in of :mod:`demo.loopback_mail`."""
    return mail == "postfix" or (mail == "auto" and mail_servers_missing() is None)


@dataclass
class Stack:
    """The running servers. ``start()`` stops what it started if a later step fails."""

    workdir: Path
    mail_kind: str = "auto"
    """``auto``, ``postfix`` or ``loopback`` (see :func:`use_postfix`)."""
    synapse: SynapseServer | None = None
    prosody: ProsodyServer | None = None
    mail: MailServers | LoopbackMail | None = None
    graph: GraphEmulator | None = None
    bridge: BridgeProcess | None = None
    as_port: int = 0
    metrics_port: int = 0
    _started: list[str] = field(default_factory=list)

    async def start(self, progress: Any = print) -> None:
        # Each run starts from nothing: the demo is about seeing the hub work, not keeping data.
        # Only Synapse's signing key is kept: making one costs a Synapse start (seconds).
        clear_workdir(self.workdir)
        key_path = self.workdir / "synapse" / "signing.key"
        key = key_path.read_bytes() if key_path.is_file() else None
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir.mkdir(parents=True)
        (self.workdir / MARKER).write_text("Made by python -m demo; emptied at each start.\n")
        if key is not None:
            key_path.parent.mkdir()
            key_path.write_bytes(key)
        site_dir = self.workdir / "site"
        site_dir.mkdir()
        config_path = self.workdir / "config.yaml"
        registration = self.workdir / "registration.yaml"
        self.as_port, self.metrics_port = free_port(), free_port()
        try:
            postfix = use_postfix(self.mail_kind)
            mail_name = "Postfix and Dovecot" if postfix else "a loopback SMTP server (aiosmtpd)"
            progress(f"starting Prosody, {mail_name}, the Graph emulator")
            self.prosody = ProsodyServer(
                self.workdir / "prosody",
                components={XMPP_COMPONENT: XMPP_SECRET, XMPP_ROOMS: XMPP_SECRET},
                log_level="info",
            )
            mail_class = MailServers if postfix else LoopbackMail
            self.mail = mail_class(
                self.workdir / "mail", bridge_domain=MAIL_DOMAIN, bridge_lmtp_port=free_port()
            )
            self.graph = GraphEmulator()
            await asyncio.gather(self.prosody.start(), self.mail.start(), self.graph.start())
            self.bridge = BridgeProcess(self.workdir, config_path, site_dir, env={})
            self._write_config(config_path)
            result = self.bridge.cli("generate-registration", "-r", str(registration))
            if result.returncode != 0:
                raise RuntimeError(f"pontis generate-registration failed:\n{result.stderr}")
            progress("starting Synapse")
            port = SYNAPSE_PORT if _port_free(SYNAPSE_PORT) else None
            self.synapse = SynapseServer(
                DOMAIN,
                self.workdir / "synapse",
                [registration],
                port=port,
                extra_config={"encryption_enabled_by_default_for_room_type": "all"},
            )
            await self.synapse.start()
            progress("starting the bridge")
            self.bridge.env["PONTIS_HOMESERVER_ADDRESS"] = self.synapse.base_url
            await self.bridge.start(self.as_port)
        except BaseException:
            await self.stop()
            raise

    def _write_config(self, path: Path) -> None:
        assert self.prosody is not None and self.mail is not None and self.graph is not None
        xmpp = xmpp_section(
            component_port=self.prosody.component_port,
            secret=XMPP_SECRET,
            upload_service=self.prosody.upload_domain,
            upload_http_port=self.prosody.http_port,
        )
        email = {
            "enabled": True,
            "domain": MAIL_DOMAIN,
            # Postfix hands mail over with LMTP; the aiosmtpd stand-in relays with SMTP.
            "inbound": {
                "protocol": "lmtp" if isinstance(self.mail, MailServers) else "smtp",
                "host": "127.0.0.1",
                "port": self.mail.bridge_lmtp_port,
            },
            "outbound": {"host": "127.0.0.1", "port": self.mail.smtp_port, "security": "none"},
            # Demo only: a mail client on this machine has no DMARC milter in front of it, so
            # its mail is taken without sender verification. Never do this in production.
            "sender_verification": "none",
            "trusted_authserv_id": "",
        }
        write_bridge_config(
            path,
            domain=DOMAIN,
            as_port=self.as_port,
            metrics_port=self.metrics_port,
            connectors={
                "xmpp": xmpp,
                "email": email,
                # Graph reaches the webhook on the bridge's own port, as a reverse proxy would.
                "teams": self.graph.teams_section(f"http://127.0.0.1:{self.as_port}"),
            },
            bridge={
                "permissions": {DOMAIN: "user", f"@demo:{DOMAIN}": "admin"},
                "federation": [
                    {"network": "email", "remote": ["*"], "matrix": ["local"]},
                    {"network": "teams", "remote": ["*"], "matrix": ["local"]},
                    {
                        "network": "xmpp",
                        "remote": [self.prosody.domain, XMPP_ROOMS, self.prosody.muc_domain],
                        "matrix": ["local"],
                    },
                ],
            },
            log_level="INFO",
            encryption={"allow": True, "default": True},
        )

    async def stop(self) -> None:
        """Stop everything that runs, the bridge first (it must not see its servers vanish and
        start retrying), then the servers; SIGKILL whatever does not stop in time."""
        if self.bridge is not None:
            await asyncio.to_thread(self.bridge.stop)
        stops = []
        for server in (self.synapse, self.prosody, self.mail, self.graph):
            if server is not None:
                stops.append(server.stop())
        results = await asyncio.gather(*stops, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                print(f"demo: stopping a server failed: {result!r}")
