"""What the Prosody and ejabberd harnesses share: one XMPP server process on loopback with a
main domain, MUC, upload and external components, run as the package's own system user from a
directory of its own, on ports chosen once so that ``restart()`` keeps them."""

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
from typing import Self

from tests.e2e.process import ServerProcess, free_port


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class XmppServerProcess(ServerProcess):
    """Subclasses name the server (``NAME``), its system user (``SYSTEM_USER``) and how long it
    may take to listen, write its config and give the command that runs it."""

    NAME = "the XMPP server"
    SYSTEM_USER = ""
    START_TIMEOUT = 30.0

    def __init__(
        self,
        workdir: Path,
        *,
        domain: str,
        muc_domain: str,
        upload_domain: str,
        components: dict[str, str] | None,
        extra_domains: tuple[str, ...],
        log_level: str,
    ) -> None:
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
        self.log_path = self.workdir / f"{self.SYSTEM_USER}.log"
        self.rundir = self._make_rundir()
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

    # -- what a subclass provides -------------------------------------------------------------

    def write_config(self) -> None:
        raise NotImplementedError

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def register(self, user: str, password: str = "pw", *, domain: str | None = None) -> str:
        """Create ``user@domain``; returns the bare JID."""
        raise NotImplementedError

    def _env(self) -> dict[str, str]:
        return {**os.environ, "HOME": str(self.rundir)}

    def _ready_ports(self) -> tuple[int, ...]:
        return (self.c2s_port, self.component_port)

    def _log_to_show(self) -> Path:
        return self.log_path

    # -- files --------------------------------------------------------------------------------

    def _make_rundir(self) -> Path:
        if os.geteuid() != 0:
            return self.workdir
        # /tmp is world-traversable; mkdtemp makes the directory 0700, then the server owns it.
        rundir = Path(tempfile.mkdtemp(prefix=f"pontis-{self.SYSTEM_USER}-", dir="/tmp"))
        link = self.workdir / "run"
        if not link.exists():
            link.symlink_to(rundir)
        atexit.register(shutil.rmtree, rundir, ignore_errors=True)
        return rundir

    def _give_rundir_to_server(self) -> None:
        if os.geteuid() == 0:
            user = pwd.getpwnam(self.SYSTEM_USER)
            for path in [self.rundir, *self.rundir.rglob("*")]:
                os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)

    def _as_server_user(self, argv: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return argv
        setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
        user = self.SYSTEM_USER
        return [setpriv, f"--reuid={user}", f"--regid={user}", "--init-groups", *argv]

    def tail(self, lines: int = 40) -> str:
        """The last lines of the server's log, for error messages."""
        path = self._log_to_show()
        if not path.exists():
            return "(no log written)"
        text = path.read_text(errors="replace").splitlines()[-lines:]
        return f"--- {path} (last {len(text)} lines) ---\n" + "\n".join(text)

    # -- process ------------------------------------------------------------------------------

    def _spawn(self) -> None:
        if self.running:
            raise RuntimeError(f"{self.NAME} is already running")
        self.write_config()
        self._output = self.log_path.open("ab")
        self._process = subprocess.Popen(
            self._as_server_user(self._argv()),
            cwd=self.rundir,
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT,
            env=self._env(),
        )
        # Never leave a server behind if the test run ends without calling stop().
        atexit.register(self._kill)

    async def start(self) -> None:
        """Launch the server and wait until its ports accept TCP."""
        began = time.monotonic()
        self._spawn()
        assert self._process is not None
        while True:
            code = self._process.poll()
            if code is not None:
                self._cleanup()
                raise RuntimeError(
                    f"{self.NAME} exited with code {code} while starting\n{self.tail()}"
                )
            if all(port_open(port) for port in self._ready_ports()):
                break
            if time.monotonic() - began > self.START_TIMEOUT:
                self._kill()
                raise RuntimeError(
                    f"{self.NAME} did not listen within {self.START_TIMEOUT:.0f} s\n{self.tail()}"
                )
            await asyncio.sleep(0.05)
        self.startup_seconds = time.monotonic() - began

    async def kill(self) -> None:
        """SIGKILL: the streams drop without a closing ``</stream:stream>``."""
        self._kill()

    async def restart(self) -> None:
        """Stop and start again on the same ports."""
        await self.stop()
        await self.start()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
