"""Running the real bridge as a separate process, the way an operator runs it.

The reference connector is installed for that process through a generated ``.dist-info`` with a
``pontis.connectors`` entry point, so connector discovery is exercised too.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from ruamel.yaml import YAML

if TYPE_CHECKING:
    from tests.e2e.synapse import SynapseServer

REPO = Path(__file__).resolve().parents[2]


def install_reference_entry_point(site_dir: Path) -> None:
    dist = site_dir / "pontis_reference_network-0.1.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: pontis-reference-network\nVersion: 0.1\n"
    )
    (dist / "entry_points.txt").write_text(
        "[pontis.connectors]\nreference = tests.reference.connector:ReferenceConnector\n"
    )


class BridgeProcess:
    """``python -m bridge -c CONFIG run`` in a subprocess, with its log kept in a file."""

    def __init__(
        self, workdir: Path, config_path: Path, site_dir: Path, env: dict[str, str]
    ) -> None:
        self.workdir = workdir
        self.config_path = config_path
        self.site_dir = site_dir
        self.env = env
        self.log_path = workdir / "bridge.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def environment(self) -> dict[str, str]:
        # Test-harness variables share the PONTIS_ prefix; the bridge would take them for
        # config overrides and refuse to start, so only the ones this process sets get through.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PONTIS_")}
        env["PYTHONPATH"] = os.pathsep.join([str(self.site_dir), str(REPO)])
        env.update(self.env)
        return env

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bridge", "-c", str(self.config_path), *args],
            cwd=self.workdir,
            env=self.environment(),
            capture_output=True,
            text=True,
            timeout=60,
        )

    async def start(self, port: int) -> None:
        self.port = port
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", "-c", str(self.config_path), "run"],
            cwd=self.workdir,
            env=self.environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 40
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError(
                        f"bridge exited with {self.proc.returncode}:\n{self.tail()}"
                    )
                try:
                    async with http.get(f"http://127.0.0.1:{port}/_pontis/health") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError(f"bridge did not become ready:\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a power cut."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    async def register_and_start(self, synapse: SynapseServer, as_port: int) -> None:
        """Write the registration, start ``synapse`` with it, then the bridge against it."""
        result = self.cli("generate-registration", "-r", str(self.workdir / "registration.yaml"))
        assert result.returncode == 0, result.stderr
        await synapse.start()
        self.env["PONTIS_HOMESERVER_ADDRESS"] = synapse.base_url
        await self.start(as_port)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Read the bridge's SQLite store directly (WAL mode allows it while the bridge runs)."""
        with sqlite3.connect(self.workdir / "pontis.db") as conn:
            return list(conn.execute(sql, args))


async def eventually(check: Callable[[], bool], what: str, timeout: float = 15) -> None:
    """Poll ``check`` until it holds; for state the bridge writes asynchronously (its store)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


XMPP_COMPONENT = "matrix.xmpp.test"
"""The bridge's XEP-0114 component in tests: Matrix users are JIDs on it."""
XMPP_ROOMS = "rooms.xmpp.test"


def xmpp_section(
    *, component_port: int, secret: str, upload_service: str, upload_http_port: int | None = None
) -> dict[str, Any]:
    """``connectors.xmpp`` for a test Prosody that has both components with ``secret``. Its
    HTTP upload serves on loopback, which the bridge refuses to fetch from unless allowed:
    exactly that port is (``upload_http_port``), no other."""
    allow = [f"127.0.0.1:{upload_http_port}"] if upload_http_port is not None else []
    return {
        "fetch_allow_private": allow,
        "enabled": True,
        "component": {
            "jid": XMPP_COMPONENT,
            "host": "127.0.0.1",
            "port": component_port,
            "secret": secret,
        },
        "rooms_domain": XMPP_ROOMS,
        "upload_service": upload_service,
    }


def write_bridge_config(
    path: Path,
    *,
    domain: str,
    as_port: int,
    metrics_port: int,
    connectors: dict[str, dict[str, Any]],
    bridge: dict[str, Any],
    log_level: str,
    encryption: dict[str, Any] | None = None,
) -> None:
    """The config an operator would write, on loopback; tokens are filled in by
    ``generate-registration`` and the homeserver address comes from ``PONTIS_HOMESERVER_ADDRESS``."""
    config = {
        "homeserver": {"address": "http://127.0.0.1:9", "domain": domain, "verify_ssl": False},
        "appservice": {
            "id": "pontis", "address": f"http://127.0.0.1:{as_port}", "hostname": "127.0.0.1",
            "port": as_port, "bot_username": "pontis", "as_token": "generate", "hs_token": "generate",
        },
        "database": "sqlite:pontis.db",
        "bridge": bridge,
        "encryption": encryption or {"allow": False},
        "connectors": connectors,
        "metrics": {"enabled": True, "listen": f"127.0.0.1:{metrics_port}"},
        "logging": {"level": log_level, "format": "text"},
    }  # fmt: skip
    with path.open("w") as f:
        YAML().dump(config, f)
