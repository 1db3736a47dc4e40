"""A real Synapse homeserver on loopback for end-to-end tests.

Synapse lives in its own venv (``PONTIS_SYNAPSE_VENV``, default ``.cache/synapse-venv``), built
by ``scripts/test.sh``; the tests never install it themselves. Each :class:`SynapseServer` keeps
its config, signing key, SQLite database, media store and logs in one working directory, so the
database survives restarts of the bridge (and of Synapse itself, if a test wants that).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

from tests.e2e.process import STOP_TIMEOUT, ServerProcess, free_port

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SYNAPSE_VENV = REPO / ".cache" / "synapse-venv"

START_TIMEOUT = 60.0

# Rate limits that exist in Synapse 1.163 (``synapse/config/ratelimiting.py``), all raised far
# beyond anything a test does. Synapse ignores top-level keys it does not know, so keys from
# other versions are harmless.
_UNLIMITED = {"per_second": 10000, "burst_count": 100000}
RATE_LIMITS: dict[str, Any] = {
    "rc_message": _UNLIMITED,
    "rc_registration": _UNLIMITED,
    "rc_registration_token_validity": _UNLIMITED,
    "rc_login": {"address": _UNLIMITED, "account": _UNLIMITED, "failed_attempts": _UNLIMITED},
    "rc_admin_redaction": _UNLIMITED,
    "rc_joins": {"local": _UNLIMITED, "remote": _UNLIMITED},
    "rc_joins_per_room": _UNLIMITED,
    "rc_key_requests": _UNLIMITED,
    "rc_3pid_validation": _UNLIMITED,
    "rc_invites": {"per_room": _UNLIMITED, "per_user": _UNLIMITED, "per_issuer": _UNLIMITED},
    "rc_third_party_invite": _UNLIMITED,
    "rc_media_create": _UNLIMITED,
    "rc_presence": {"per_user": _UNLIMITED},
    "rc_delayed_event_mgmt": _UNLIMITED,
    "rc_room_creation": _UNLIMITED,
    "rc_reports": _UNLIMITED,
    "rc_user_directory": _UNLIMITED,
    "rc_profile": _UNLIMITED,
}


def synapse_python() -> Path:
    """The Python interpreter of the Synapse venv; fails clearly when it has not been built."""
    venv = Path(os.environ.get("PONTIS_SYNAPSE_VENV") or DEFAULT_SYNAPSE_VENV)
    python = venv / "bin" / "python"
    if not python.exists():
        raise RuntimeError(
            f"No Synapse venv at {venv} (set PONTIS_SYNAPSE_VENV or build it): "
            "run ./scripts/test.sh, which installs matrix-synapse into .cache/synapse-venv"
        )
    return python


def _log_config(log_path: Path) -> dict[str, Any]:
    return {
        "version": 1,
        "formatters": {
            "precise": {
                "format": "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - "
                "%(request)s - %(message)s"
            }
        },
        "handlers": {
            "file": {
                "class": "logging.FileHandler",
                "formatter": "precise",
                "filename": str(log_path),
                "encoding": "utf8",
            }
        },
        "loggers": {
            "synapse.storage.SQL": {"level": "WARNING"},
            "synapse.access.http": {"level": "INFO"},
        },
        "root": {"level": "INFO", "handlers": ["file"]},
        "disable_existing_loggers": False,
    }


class SynapseServer(ServerProcess):
    """One Synapse process: ``server_name`` on ``127.0.0.1:<free port>``, files in ``workdir``.

    Use ``await start()`` / ``await stop()`` from async code (or ``async with``), or
    ``start_blocking()`` / ``stop_blocking()`` from synchronous code. The process is a plain
    ``subprocess.Popen``, so it is not tied to any event loop.
    """

    def __init__(
        self,
        server_name: str,
        workdir: Path,
        registrations: Sequence[Path] = (),
        *,
        port: int | None = None,
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        self.server_name = server_name
        self.workdir = Path(workdir)
        self.registrations = [Path(p) for p in registrations]
        self.port = port or free_port()
        self.extra_config = extra_config or {}
        self.config_path = self.workdir / "homeserver.yaml"
        self.log_path = self.workdir / "homeserver.log"
        self.stdout_path = self.workdir / "stdout.log"
        self.shared_secret = secrets.token_hex(16)
        self.startup_seconds: float | None = None
        self._process: subprocess.Popen[bytes] | None = None

    # -- properties ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- config -------------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        d = self.workdir
        config: dict[str, Any] = {
            "server_name": self.server_name,
            "public_baseurl": self.base_url + "/",
            "pid_file": str(d / "homeserver.pid"),
            "listeners": [
                {
                    "port": self.port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    "tls": False,
                    "x_forwarded": False,
                    "resources": [{"names": ["client"], "compress": False}],
                }
            ],
            "database": {"name": "sqlite3", "args": {"database": str(d / "homeserver.db")}},
            "log_config": str(d / "log_config.yaml"),
            "media_store_path": str(d / "media_store"),
            "max_upload_size": "50M",
            "signing_key_path": str(d / "signing.key"),
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "registration_shared_secret": self.shared_secret,
            "macaroon_secret_key": self.shared_secret + "-macaroon",
            "form_secret": self.shared_secret + "-form",
            "enable_registration": False,
            "bcrypt_rounds": 4,
            "report_stats": False,
            "enable_metrics": False,
            "presence": {"enabled": False},
            "url_preview_enabled": False,
            "background_updates": {"sleep_enabled": False},
            "app_service_config_files": [str(p) for p in self.registrations],
            "use_appservice_legacy_authorization": False,
            "experimental_features": {
                "msc2409_to_device_messages_enabled": True,
                "msc3202_transaction_extensions": True,
                # Device masquerading is stable in recent Synapse; the flag is ignored there.
                "msc3202_device_masquerading": True,
            },
            **RATE_LIMITS,
        }
        config.update(self.extra_config)
        return config

    def write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "media_store").mkdir(exist_ok=True)
        # JSON is valid YAML, and the project venv need not write YAML for Synapse.
        self.config_path.write_text(json.dumps(self.config(), indent=2))
        (self.workdir / "log_config.yaml").write_text(
            json.dumps(_log_config(self.log_path), indent=2)
        )
        if not (self.workdir / "signing.key").exists():
            result = subprocess.run(
                [
                    str(synapse_python()),
                    "-m",
                    "synapse.app.homeserver",
                    "-c",
                    str(self.config_path),
                    "--generate-keys",
                ],
                cwd=self.workdir,
                capture_output=True,
                text=True,
                timeout=60,
            )
            if result.returncode != 0:
                raise RuntimeError(
                    f"synapse --generate-keys failed ({result.returncode}):\n"
                    f"{result.stdout}\n{result.stderr}"
                )

    # -- process ------------------------------------------------------------------------------

    def _spawn(self) -> None:
        if self.running:
            raise RuntimeError("Synapse is already running")
        self.write_config()
        self._output = self.stdout_path.open("ab")
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        self._process = subprocess.Popen(
            [str(synapse_python()), "-m", "synapse.app.homeserver", "-c", str(self.config_path)],
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT,
            env=env,
        )
        # Never leave a homeserver behind if the test run ends without calling stop().
        atexit.register(self._kill)

    def tail(self, lines: int = 40) -> str:
        """The last lines of the Synapse log and of its stdout/stderr, for error messages."""
        parts = []
        for path in (self.log_path, self.stdout_path):
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {path} (last {len(text)} lines) ---\n" + "\n".join(text))
        return "\n".join(parts) or "(no logs written)"

    def _check_alive(self) -> None:
        assert self._process is not None
        code = self._process.poll()
        if code is not None:
            raise RuntimeError(f"Synapse exited with code {code} while starting\n{self.tail()}")

    def _timed_out(self) -> RuntimeError:
        self._kill()
        return RuntimeError(f"Synapse did not answer within {START_TIMEOUT:.0f} s\n{self.tail()}")

    async def start(self) -> None:
        began = time.monotonic()
        self._spawn()
        url = self.base_url + "/_matrix/client/versions"
        async with aiohttp.ClientSession() as session:
            while True:
                self._check_alive()
                try:
                    async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                        if resp.status == 200:
                            break
                except (TimeoutError, aiohttp.ClientError):
                    pass
                if time.monotonic() - began > START_TIMEOUT:
                    raise self._timed_out()
                await asyncio.sleep(0.1)
        self.startup_seconds = time.monotonic() - began

    def start_blocking(self) -> None:
        began = time.monotonic()
        self._spawn()
        url = self.base_url + "/_matrix/client/versions"
        while True:
            self._check_alive()
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() - began > START_TIMEOUT:
                raise self._timed_out()
            time.sleep(0.1)
        self.startup_seconds = time.monotonic() - began

    def stop_blocking(self) -> None:
        proc = self._process
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(STOP_TIMEOUT)
        self._kill()

    async def __aenter__(self) -> SynapseServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- admin API ----------------------------------------------------------------------------

    async def register_user(
        self,
        localpart: str,
        password: str = "pw",
        admin: bool = False,
        displayname: str | None = None,
    ) -> tuple[str, str]:
        """Register through the shared-secret admin API; returns ``(mxid, access_token)``."""
        url = self.base_url + "/_synapse/admin/v1/register"
        async with aiohttp.ClientSession() as session:
            async with session.get(url) as resp:
                body = await resp.json()
                if resp.status != 200:
                    raise RuntimeError(f"GET {url} -> {resp.status}: {body}")
                nonce = body["nonce"]
            mac = hmac.new(self.shared_secret.encode(), digestmod=hashlib.sha1)
            mac.update(nonce.encode())
            mac.update(b"\x00")
            mac.update(localpart.encode())
            mac.update(b"\x00")
            mac.update(password.encode())
            mac.update(b"\x00")
            mac.update(b"admin" if admin else b"notadmin")
            payload: dict[str, Any] = {
                "nonce": nonce,
                "username": localpart,
                "password": password,
                "admin": admin,
                "mac": mac.hexdigest(),
            }
            if displayname is not None:
                payload["displayname"] = displayname
            async with session.post(url, json=payload) as resp:
                body = await resp.json()
                if resp.status != 200:
                    raise RuntimeError(f"registering {localpart!r} -> {resp.status}: {body}")
        return body["user_id"], body["access_token"]
