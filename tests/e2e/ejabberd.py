"""A real ejabberd XMPP server on loopback for end-to-end tests, interchangeable with Prosody.

ejabberd comes from the Debian package ``ejabberd`` (23.01), installed by ``scripts/test.sh``;
the tests never install it themselves. Each :class:`EjabberdServer` is one Erlang VM started
with ``erl -s ejabberd`` (not ``ejabberdctl foreground``: as root that runs ``su`` → ``sh`` →
beam in a session of its own, and the PID held here would not be the server's). The process is
not distributed (no ``-sname``): it registers nothing with epmd, opens no distribution port and
needs no cookie, so two test runs on one machine cannot reach each other's node, and the
packaged service's node (``ejabberd@localhost``) is never touched. ``ejabberdctl`` therefore
cannot talk to it; accounts are made through ``mod_http_api`` instead, which only loopback may
call and only for ``register``.

It offers what :class:`tests.e2e.prosody.ProsodyServer` offers, under the same names (``domain``,
``muc_domain``, ``upload_domain``, ``c2s_port``, ``component_port``, ``http_port``,
``register``, ``start``/``stop``/``kill``/``restart``), so that a test written against one runs
against the other. As root the VM runs as the ``ejabberd`` system user (``setpriv``), its files
(config, Mnesia spool, logs, uploads) in a run directory under ``/tmp`` (``rundir``, linked from
``workdir/run``) for the reason given in the Prosody harness: pytest's temp tree is 0700.
Everything lives in Mnesia under ``rundir/spool``, so accounts and archives survive
``restart()``. ejabberd logs to ``rundir/logs/ejabberd.log`` and its console to
``workdir/ejabberd.log``.

Startup (fresh spool) takes ≈ 1 to 1.5 s on two cores, most of it the Erlang VM and Mnesia; the
listeners open last, so an open port means the server is ready.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from tests.e2e.xmpp_server import XmppServerProcess

ERL = "/usr/bin/erl"
INETRC = Path("/etc/ejabberd/inetrc")
UPLOAD_SIZE_LIMIT = 16 * 1024 * 1024


def _yaml(value: str) -> str:
    """A YAML string literal (JSON strings are valid YAML)."""
    return json.dumps(value)


def _indent(text: str, spaces: int) -> str:
    return "".join(" " * spaces + line if line.strip() else line for line in text.splitlines(True))


COMMON_MODULES = """\
mod_caps: {}
mod_disco: {}
mod_http_api: {}
mod_mam:
  db_type: mnesia
  default: always
mod_offline: {}
mod_ping: {}
mod_roster: {}
mod_stream_mgmt: {}
mod_vcard:
  search: false
"""
"""Modules of every virtual host."""


def erl_libs() -> Path | None:
    """Where the Debian package put ejabberd and its dependencies as OTP applications
    (``/usr/lib/<multiarch>/ejabberd-23.01/``...); erl finds them through ``ERL_LIBS``
    (without it: ``undef ejabberd:start``)."""
    for app in sorted(Path("/usr/lib").glob("*/ejabberd-*/ebin/ejabberd.app")):
        return app.parent.parent.parent
    return None


def ejabberd_installed() -> bool:
    return Path(ERL).exists() and erl_libs() is not None


class EjabberdServer(XmppServerProcess):
    """One ejabberd VM: ``domain`` plus MUC (with MAM), HTTP upload and external components.

    ``components`` maps external component domains (``ejabberd_service``) to their secrets; their
    users may request upload slots, as the bridge's Matrix users (``@alice`` →
    ``alice\\3a…@matrix.…``) do. ``extra_domains`` are further virtual hosts. The ports are
    chosen once, in the constructor, so ``restart()`` brings the server back on the same ones.
    """

    NAME = "ejabberd"
    SYSTEM_USER = "ejabberd"

    def __init__(
        self,
        workdir: Path,
        *,
        domain: str = "xmpp.test",
        muc_domain: str = "muc.xmpp.test",
        upload_domain: str = "upload.xmpp.test",
        components: dict[str, str] | None = None,
        extra_domains: tuple[str, ...] = (),
        log_level: str = "info",
    ) -> None:
        if not ejabberd_installed():
            raise RuntimeError(
                "ejabberd is not installed: run ./scripts/test.sh, which installs the Debian "
                "package 'ejabberd'"
            )
        super().__init__(
            workdir, domain=domain, muc_domain=muc_domain, upload_domain=upload_domain,
            components=components, extra_domains=extra_domains, log_level=log_level,
        )  # fmt: skip
        self.config_path = self.rundir / "ejabberd.yml"
        self.spool_path = self.rundir / "spool"
        self.server_log_path = self.rundir / "logs" / "ejabberd.log"
        self.upload_path = self.rundir / "upload"

    # -- files --------------------------------------------------------------------------------

    def config(self) -> str:
        """``ejabberd.yml``: what docs/prosody-ejabberd.md tells an operator, on loopback."""
        hosts = ", ".join(_yaml(h) for h in (self.domain, *self.extra_domains))
        components = (
            "".join(
                f"      {_yaml(jid)}: {{password: {_yaml(secret)}}}\n"
                for jid, secret in self.components.items()
            )
            or "      {}\n"
        )
        bridge_servers = ", ".join(_yaml(jid) for jid in self.components) or _yaml(self.domain)
        return f"""\
# Written by tests/e2e/ejabberd.py: a throw-away test server on loopback.
hosts: [{hosts}]
loglevel: {self.log_level}
certfiles: []
auth_method: internal
auth_password_format: plain
s2s_access: none
listen:
  - port: {self.c2s_port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls: false
    shaper: none
    max_stanza_size: 262144
  # XEP-0114: the bridge's components, one secret each, on one port. ``global_routes: false``
  # routes to each connection only the domain it authenticated as; by default every
  # connection of the listener gets the stanzas of all its hosts, the bridge's two components
  # each get half of the other's.
  - port: {self.component_port}
    ip: "127.0.0.1"
    module: ejabberd_service
    global_routes: false
    hosts:
{components}\
  - port: {self.http_port}
    ip: "127.0.0.1"
    module: ejabberd_http
    request_handlers:
      /upload: mod_http_upload
      /api: mod_http_api
acl:
  local:
    user_regexp: ""
  loopback:
    ip: [127.0.0.0/8]
  # The bridge's Matrix users are JIDs on its component: they upload files from Matrix.
  bridge:
    server: [{bridge_servers}]
access_rules:
  local:
    allow: local
  c2s:
    allow: all
  # One line per ACL: a list on one line would mean "all of them at once".
  upload:
    - allow: local
    - allow: bridge
api_permissions:
  "test harness registers users":
    from: [mod_http_api]
    who:
      access:
        allow: loopback
    what: [register]
modules:
{_indent(COMMON_MODULES, 2)}\
# The MUC and upload services belong to the main domain only (with more than one virtual host,
# a global ``host:`` would be claimed by each). A host's ``modules`` replace the global ones,
# hence the common ones again.
host_config:
  {_yaml(self.domain)}:
    modules:
{_indent(COMMON_MODULES + self._main_modules(), 6)}\
"""

    def _main_modules(self) -> str:
        return f"""\
mod_http_upload:
  host: {_yaml(self.upload_domain)}
  put_url: {_yaml(self.http_url + "/upload")}
  docroot: {_yaml(str(self.upload_path))}
  max_size: {UPLOAD_SIZE_LIMIT}
  access: upload
  thumbnail: false
mod_pubsub:
  host: {_yaml("pubsub." + self.domain)}
  plugins: [flat, pep]
mod_muc:
  host: {_yaml(self.muc_domain)}
  access: all
  access_create: all
  access_persistent: all
  access_mam: all
  history_size: 20
  default_room_options:
    mam: true
"""

    def write_config(self) -> None:
        for path in (self.rundir, self.spool_path, self.server_log_path.parent, self.upload_path):
            path.mkdir(exist_ok=True)
        self.config_path.write_text(self.config())
        # Without an inetrc in its config directory ejabberd logs an inet_config error.
        if INETRC.exists():
            shutil.copyfile(INETRC, self.rundir / "inetrc")
        self._give_rundir_to_server()

    def _argv(self) -> list[str]:
        return [ERL, "-noinput", "-mnesia", "dir", f'"{self.spool_path}"', "-s", "ejabberd"]

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ERL_", "EJABBERD_"))}
        return env | {
            "HOME": str(self.rundir),
            "ERL_LIBS": str(erl_libs()),
            "EJABBERD_CONFIG_PATH": str(self.config_path),
            "EJABBERD_LOG_PATH": str(self.server_log_path),
            # An Erlang crash dump of a test server is megabytes nobody reads.
            "ERL_CRASH_DUMP_BYTES": "0",
        }

    def _ready_ports(self) -> tuple[int, ...]:
        return (self.c2s_port, self.component_port, self.http_port)

    def _log_to_show(self) -> Path:
        """ejabberd's own log, or its console while it has none."""
        return self.server_log_path if self.server_log_path.exists() else self.log_path

    # -- accounts -----------------------------------------------------------------------------

    def register(self, user: str, password: str = "pw", *, domain: str | None = None) -> str:
        """Create ``user@domain`` (``domain``: the main one or one of ``extra_domains``) through
        ``mod_http_api``; returns the bare JID.

        The server must be running (a few ms). Registering an existing user fails.
        """
        host = domain or self.domain
        if host not in (self.domain, *self.extra_domains):
            raise ValueError(f"{host} is not a virtual host of this server")
        if not self.running:
            raise RuntimeError("ejabberd registers users only while it runs: start() it first")
        body = json.dumps({"user": user, "host": host, "password": password}).encode()
        request = urllib.request.Request(
            f"{self.http_url}/api/register",
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                resp.read()
        except urllib.error.HTTPError as err:
            detail = err.read().decode(errors="replace")
            raise RuntimeError(f"registering {user}@{host} failed ({err.code}): {detail}") from err
        return f"{user}@{host}"
