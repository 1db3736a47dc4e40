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

import subprocess
from pathlib import Path

from tests.e2e.xmpp_server import XmppServerProcess

PROSODY = "/usr/bin/prosody"
PROSODYCTL = "/usr/bin/prosodyctl"
UPLOAD_SIZE_LIMIT = 16 * 1024 * 1024


def _lua(value: str) -> str:
    """A Lua string literal (the config file is Lua)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def prosody_installed() -> bool:
    return Path(PROSODY).exists() and Path(PROSODYCTL).exists()


class ProsodyServer(XmppServerProcess):
    """One Prosody process: ``domain`` plus MUC, upload and external components, on loopback.

    ``components`` maps external component domains (XEP-0114) to their secrets;
    ``extra_domains`` are further virtual hosts, for accounts of other organisations on the same
    server (``register(..., domain=...)``). The ports are chosen once, in the constructor, so
    ``restart()`` brings the server back on the same ones.
    """

    NAME = "Prosody"
    SYSTEM_USER = "prosody"

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
        super().__init__(
            workdir, domain=domain, muc_domain=muc_domain, upload_domain=upload_domain,
            components=components, extra_domains=extra_domains, log_level=log_level,
        )  # fmt: skip
        self.config_path = self.rundir / "prosody.cfg.lua"
        self.data_path = self.rundir / "data"
        self.pid_path = self.rundir / "prosody.pid"

    # -- files --------------------------------------------------------------------------------

    def config(self) -> str:
        lines = [
            "-- Written by tests/e2e/prosody.py: a throw-away test server on loopback.",
            f"pidfile = {_lua(str(self.pid_path))}",
            f"data_path = {_lua(str(self.data_path))}",
            f"certificates = {_lua(str(self.rundir / 'certs'))}",
            # mod_posix (pidfile, root check) is loaded automatically on POSIX systems.
            # pep: XEP-0084 avatars (and XEP-0163 notifications to the bridge's Matrix users).
            'modules_enabled = { "disco"; "roster"; "saslauth"; "ping"; "time"; "version"; "vcard";'
            ' "pep" }',
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

    def write_config(self) -> None:
        for path in (self.rundir, self.data_path, self.rundir / "certs"):
            path.mkdir(exist_ok=True)
        self.config_path.write_text(self.config())
        self._give_rundir_to_server()

    def _argv(self) -> list[str]:
        return [PROSODY, "-F", "--config", str(self.config_path)]

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
            self._as_server_user([*argv, password]),
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
