"""A real Prosody XMPP server on loopback for end-to-end tests.

Prosody comes from the Debian package ``prosody`` (0.12), installed by ``scripts/test.sh``; the
tests never install it themselves. Each :class:`ProsodyServer` listens on free loopback ports:
c2s (plain TCP, PLAIN auth allowed, no TLS), XEP-0114 components and HTTP (XEP-0363 uploads).

Prosody refuses to run as root, so as root the process runs as the ``prosody`` system user
(``setpriv``). Its files (config, pidfile, accounts, uploads) then live in a run directory of its
own under ``/tmp`` (``rundir``, linked from ``workdir/run``), not in ``workdir``: pytest keeps its
temp tree at mode 0700 and resets that mode whenever another pytest session starts, so a
directory under it is not reliably reachable by another user. The run directory is removed when
the Python process exits. Prosody logs to its stdout, which goes to ``workdir/prosody.log``.

Accounts live in the default file storage under ``data_path``. ``register()`` runs ``prosodyctl
register``, which writes the account file directly, and the running server reads it at the next
login (no cache), so users can be registered before or after ``start()``. Archives (MAM, MUC
logs) are kept in memory: fast, and gone after ``restart()``; accounts survive it.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.e2e.process import ServerProcess, free_port

START_TIMEOUT = 20.0
PROSODY = "/usr/bin/prosody"
PROSODYCTL = "/usr/bin/prosodyctl"
UPLOAD_SIZE_LIMIT = 16 * 1024 * 1024


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _lua(value: str) -> str:
    """A Lua string literal (the config file is Lua)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def prosody_installed() -> bool:
    return Path(PROSODY).exists() and Path(PROSODYCTL).exists()


class ProsodyServer(ServerProcess):
    """One Prosody process: ``domain`` plus MUC, upload and external components, on loopback.

    ``components`` maps external component domains (XEP-0114) to their secrets;
    ``extra_domains`` are further virtual hosts, for accounts of other organisations on the same
    server (``register(..., domain=...)``). The ports are chosen once, in the constructor, so
    ``restart()`` brings the server back on the same ones.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        domain: str = "xmpp.test",
        muc_domain: str = "muc.xmpp.test",
        upload_domain: str = "upload.xmpp.test",
        components: dict[str, str] | None = None,
        extra_domains: tuple[str, ...] = (),
        log_level: str = "debug",
    ) -> None:
        if not prosody_installed():
            raise RuntimeError(
                "Prosody is not installed: run ./scripts/test.sh, which installs the Debian "
                "package 'prosody'"
            )
        self.workdir = Path(workdir).resolve()
        self.domain = domain
        self.muc_domain = muc_domain
        self.upload_domain = upload_domain
        self.components = dict(components or {})
        self.extra_domains = tuple(extra_domains)
        self.log_level = log_level
        self.c2s_port = free_port()
        self.component_port = free_port()
        self.http_port = free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "prosody.log"
        self.rundir = self._make_rundir()
        self.config_path = self.rundir / "prosody.cfg.lua"
        self.data_path = self.rundir / "data"
        self.pid_path = self.rundir / "prosody.pid"
        self.startup_seconds: float | None = None
        self._process: subprocess.Popen[bytes] | None = None

    # -- properties ---------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- files --------------------------------------------------------------------------------

    def config(self) -> str:
        lines = [
            "-- Written by tests/e2e/prosody.py: a throw-away test server on loopback.",
            f"pidfile = {_lua(str(self.pid_path))}",
            f"data_path = {_lua(str(self.data_path))}",
            f"certificates = {_lua(str(self.rundir / 'certs'))}",
            # mod_posix (pidfile, root check) is loaded automatically on POSIX systems.
            'modules_enabled = { "disco"; "roster"; "saslauth"; "ping"; "time"; "version"; "vcard" }',
            # No mod_limits: the Debian default config throttles c2s to 10 kb/s.
            'modules_disabled = { "limits" }',
            f"c2s_ports = {{ {self.c2s_port} }}",
            'c2s_interfaces = { "127.0.0.1" }',
            "c2s_require_encryption = false",
            "allow_unencrypted_plain_auth = true",
            "s2s_ports = { }",
            "s2s_interfaces = { }",
            f"component_ports = {{ {self.component_port} }}",
            'component_interfaces = { "127.0.0.1" }',
            f"http_ports = {{ {self.http_port} }}",
            'http_interfaces = { "127.0.0.1" }',
            "https_ports = { }",
            "https_interfaces = { }",
            f"http_default_host = {_lua(self.upload_domain)}",
            # To stdout (prosody -F), which start() appends to log_path.
            f'log = {{ {{ levels = {{ min = {_lua(self.log_level)} }}, to = "console" }} }}',
            'authentication = "internal_plain"',
            # Accounts, rosters etc. in files under data_path (prosodyctl writes there too);
            # archives in memory (file archives are slow, and tests never need them back).
            'storage = { archive = "memory"; muc_log = "memory" }',
            "",
        ]
        for host in (self.domain, *self.extra_domains):
            lines += [f"VirtualHost {_lua(host)}", ""]
        for component, secret in self.components.items():
            lines += [f"Component {_lua(component)}", f"    component_secret = {_lua(secret)}", ""]
        lines += [
            f'Component {_lua(self.muc_domain)} "muc"',
            '    modules_enabled = { "muc_mam" }',
            "    muc_room_locking = false",
            '    storage = { muc_log = "memory"; archive = "memory" }',
            "",
            f'Component {_lua(self.upload_domain)} "http_file_share"',
            f"    http_file_share_size_limit = {UPLOAD_SIZE_LIMIT}",
            f"    http_file_share_daily_quota = {UPLOAD_SIZE_LIMIT * 100}",
            # Slot URLs point at the loopback listener, and requests for that Host reach this
            # component (Prosody routes HTTP by Host header).
            '    http_host = "127.0.0.1"',
            f"    http_external_url = {_lua(self.http_url + '/')}",
            "",
        ]
        return "\n".join(lines)

    def _make_rundir(self) -> Path:
        if os.geteuid() != 0:
            return self.workdir
        # /tmp is world-traversable; mkdtemp makes the directory 0700, then prosody owns it.
        rundir = Path(tempfile.mkdtemp(prefix="pontis-prosody-", dir="/tmp"))
        link = self.workdir / "run"
        if not link.exists():
            link.symlink_to(rundir)
        atexit.register(shutil.rmtree, rundir, ignore_errors=True)
        return rundir

    def write_config(self) -> None:
        for path in (self.rundir, self.data_path, self.rundir / "certs"):
            path.mkdir(exist_ok=True)
        self.config_path.write_text(self.config())
        if os.geteuid() == 0:
            user = pwd.getpwnam("prosody")
            for path in [self.rundir, *self.rundir.rglob("*")]:
                os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)

    def _as_prosody(self, argv: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return argv
        setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
        return [setpriv, "--reuid=prosody", "--regid=prosody", "--init-groups", *argv]

    def _env(self) -> dict[str, str]:
        return {**os.environ, "HOME": str(self.rundir)}

    # -- process ------------------------------------------------------------------------------

    def _spawn(self) -> None:
        if self.running:
            raise RuntimeError("Prosody is already running")
        self.write_config()
        self._output = self.log_path.open("ab")
        self._process = subprocess.Popen(
            self._as_prosody([PROSODY, "-F", "--config", str(self.config_path)]),
            cwd=self.rundir,
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT,
            env=self._env(),
        )
        # Never leave a server behind if the test run ends without calling stop().
        atexit.register(self._kill)

    def tail(self, lines: int = 40) -> str:
        """The last lines of the Prosody log (its stdout and stderr), for error messages."""
        if not self.log_path.exists():
            return "(no log written)"
        text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return f"--- {self.log_path} (last {len(text)} lines) ---\n" + "\n".join(text)

    async def start(self) -> None:
        """Launch ``prosody -F`` and wait until the c2s and component ports accept TCP."""
        began = time.monotonic()
        self._spawn()
        assert self._process is not None
        while True:
            code = self._process.poll()
            if code is not None:
                self._cleanup()
                raise RuntimeError(f"Prosody exited with code {code} while starting\n{self.tail()}")
            if _port_open(self.c2s_port) and _port_open(self.component_port):
                break
            if time.monotonic() - began > START_TIMEOUT:
                self._kill()
                raise RuntimeError(
                    f"Prosody did not listen within {START_TIMEOUT:.0f} s\n{self.tail()}"
                )
            await asyncio.sleep(0.05)
        self.startup_seconds = time.monotonic() - began

    async def kill(self) -> None:
        """SIGKILL: the streams drop without a closing ``</stream:stream>``."""
        self._kill()

    async def restart(self) -> None:
        """Stop and start again on the same ports (accounts survive, archives do not)."""
        await self.stop()
        await self.start()

    async def __aenter__(self) -> ProsodyServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- accounts -----------------------------------------------------------------------------

    def register(self, user: str, password: str = "pw", *, domain: str | None = None) -> str:
        """Create ``user@domain`` (``domain``: the main one or one of ``extra_domains``) with
        ``prosodyctl register``; returns the bare JID.

        Works whether or not the server runs (~40 ms). Registering an existing user fails.
        """
        host = domain or self.domain
        if host not in (self.domain, *self.extra_domains):
            raise ValueError(f"{host} is not a virtual host of this server")
        if not self.config_path.exists():
            self.write_config()
        argv = [PROSODYCTL, "--config", str(self.config_path), "register", user, host]
        result = subprocess.run(
            self._as_prosody([*argv, password]),
            cwd=self.rundir,
            capture_output=True,
            text=True,
            timeout=30,
            env=self._env(),
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"prosodyctl register {user} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return f"{user}@{host}"
