"""A real Postfix and Dovecot on loopback for end-to-end tests of the email connector.

Both come from Debian packages (``postfix``, ``dovecot-imapd``, ``dovecot-lmtpd``) installed by
``scripts/test.sh``; the tests never install them. :class:`MailServers` runs one of each as child
processes, with every file in a run directory of its own, on free loopback ports:

- Postfix's smtpd takes mail for two domains. ``agency.test`` (the "agency", whose people the
  bridge mails) is a virtual mailbox domain delivered to Dovecot over LMTP. The bridge's mail
  domain (``bridge_domain``) is routed with ``transport_maps`` to
  ``lmtp:inet:127.0.0.1:<bridge_lmtp_port>``, where the bridge (or a test) listens. Every other
  domain bounces at once (``default_transport = error``): no DNS, no network but loopback.
- Dovecot serves IMAP (no TLS, plain passwords) and LMTP. :meth:`MailServers.add_user` writes
  one passwd-file per user, which Dovecot finds at the next lookup.

Unknown recipients at ``agency.test`` are *accepted* by smtpd and bounced afterwards: Dovecot's
LMTP answers ``550 5.1.1`` at RCPT and Postfix's bounce daemon sends a DSN (multipart/report) to
the envelope sender. That is what a real agency's MTA does for mail it relays to a mailbox
server, and it is what the connector must handle: a bridge that submits to its relay learns
about a bad address only from a DSN that arrives later over its own LMTP listener. (Rejecting at
RCPT time would need recipient validation in Postfix and would only test the synchronous path.)

Retries are fast: a 4xx from the bridge's LMTP listener, or a refused connection, is retried
after 1-2 s (``minimal_backoff_time``, ``maximal_backoff_time``, ``queue_run_delay``).

Postfix's master and daemons and Dovecot need root (they switch to the ``postfix``, ``dovecot``
and ``dovenull`` users, and Dovecot delivers as the ``mail`` user). Those users cannot enter
pytest's temp tree (mode 0700), so the servers' files live in ``rundir`` under ``/tmp`` (linked
from ``workdir/run``), removed when the Python process exits; the logs are copied into
``workdir`` by :meth:`MailServers.stop`.

Sending and reading mail (SMTP, IMAP, ``postqueue``) is in :mod:`tests.e2e.mail_client`.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import grp
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

from tests.e2e.mail_client import POSTQUEUE, MailClient
from tests.e2e.process import ServerProcess, free_port

AGENCY_DOMAIN = "agency.test"
START_TIMEOUT = 10.0

POSTFIX = "/usr/sbin/postfix"
POSTFIX_MASTER = "/usr/lib/postfix/sbin/master"
DOVECOT = "/usr/sbin/dovecot"
DOVECOT_LMTP = "/usr/lib/dovecot/lmtp"
# The owner of the users' maildirs: Dovecot refuses uid 0 for mail.
MAIL_OWNER = "mail"

# The services Postfix needs here, without chroot (the daemons use the queue directory as it is).
MASTER_CF = """# Written by tests/e2e/mail.py.
127.0.0.1:{smtp_port} inet n - n - - smtpd
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
lmtp unix - - n - - lmtp
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
"""


def mail_servers_missing() -> str | None:
    """Why :class:`MailServers` cannot run here, or None when it can (for ``skipif``)."""
    for program in (POSTFIX, POSTQUEUE, POSTFIX_MASTER, DOVECOT, DOVECOT_LMTP):
        if not Path(program).exists():
            return (
                f"{program} is missing: run ./scripts/test.sh, which installs the Debian "
                "packages postfix, dovecot-imapd and dovecot-lmtpd"
            )
    if os.geteuid() != 0:
        return "Postfix and Dovecot need root to run (they switch to their own users)"
    return None


def _tail(path: Path, lines: int) -> str:
    if not path.exists():
        return f"--- {path}: no log written ---"
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return f"--- {path} (last {len(text)} lines) ---\n" + "\n".join(text)


async def _greets(port: int, server: str) -> bool:
    """Whether ``server`` (its name is in its greeting) answers on the port: something else
    listening there would only fool a plain connect."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    try:
        greeting = await asyncio.wait_for(reader.readline(), 1)
    except (OSError, TimeoutError):
        greeting = b""
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return server.encode() in greeting


class _Daemon(ServerProcess):
    """A master process whose helpers share its process group, so stopping it ends them all.

    Postfix's master makes itself a session leader; Dovecot is started as one. SIGTERM lets the
    master stop its children; whatever is left of the group afterwards gets SIGKILL.
    """

    def __init__(self, name: str, output: Path) -> None:
        self.name = name
        self.output_path = output
        self._process = None
        self._pgid: int | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def spawn(self, argv: list[str], *, cwd: Path, new_session: bool) -> None:
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self._output = self.output_path.open("ab")
        self._process = subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT,
            start_new_session=new_session,
        )
        # Either way the group id is the master's pid (Postfix's master calls setsid itself).
        self._pgid = self._process.pid
        atexit.register(self._kill)

    def exit_code(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def _kill(self) -> None:
        pgid, self._pgid = self._pgid, None
        super()._kill()
        if pgid is None:
            return
        # The master is gone; its daemons got SIGTERM from it. Give them a moment, then SIGKILL.
        deadline = time.monotonic() + 0.5
        while _live_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.02)
        deadline = time.monotonic() + 2.0
        while _live_members(pgid) and time.monotonic() < deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            time.sleep(0.02)


def _live_members(pgid: int) -> list[int]:
    """The processes of group ``pgid`` that still run. Zombies do not count: the daemons are
    orphaned when their master exits, and it is init, not us, that reaps them."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # gone meanwhile
        # After "pid (comm)": state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            pids.append(int(stat.parent.name))
    return pids


class MailServers:
    """Postfix (smtpd on ``smtp_port``) and Dovecot (IMAP on ``imap_port``) on 127.0.0.1.

    ``bridge_domain`` is the bridge's mail domain, delivered over LMTP to
    ``127.0.0.1:bridge_lmtp_port``; nothing needs to listen there when Postfix starts (mail
    waits in the queue and is retried every 1-2 s). ``postfix_settings`` adds or overrides
    main.cf parameters, e.g. ``{"maximal_queue_lifetime": "5s"}`` for a test about giving up.
    Use ``async with MailServers(...)`` or ``await start()`` / ``await stop()``.

    For tests: ``add_user`` (mailboxes at agency.test), ``send`` (SMTP to smtpd),
    ``wait_for_mail`` / ``all_mail`` (IMAP), ``queue`` / ``flush`` (postqueue), and ``tail()``,
    ``postfix_log``, ``dovecot_log`` when something goes wrong. The mail methods are those of
    ``client`` (:class:`tests.e2e.mail_client.MailClient`).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        bridge_domain: str,
        bridge_lmtp_port: int,
        postfix_settings: dict[str, str] | None = None,
    ) -> None:
        missing = mail_servers_missing()
        if missing:
            raise RuntimeError(missing)
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.domain = AGENCY_DOMAIN
        self.bridge_domain = bridge_domain
        self.bridge_lmtp_port = bridge_lmtp_port
        self.postfix_settings = dict(postfix_settings or {})
        self.smtp_port = free_port()
        self.imap_port = free_port()
        self.dovecot_lmtp_port = free_port()
        self.rundir = self._make_rundir()
        self.postfix_dir = self.rundir / "postfix"
        self.dovecot_dir = self.rundir / "dovecot"
        self.dovecot_dir.mkdir()
        self.maildir_root = self.rundir / "mail"
        # One passwd-file per user: Dovecot looks at a file at most once a second, so a user added
        # to a shared file right after a lookup would stay unknown for up to a second.
        self.users_dir = self.dovecot_dir / "users"
        self.users_dir.mkdir(mode=0o750)  # plain passwords: only Dovecot's auth reads them
        os.chown(self.users_dir, 0, grp.getgrnam("dovecot").gr_gid)
        self.dovecot_config_path = self.dovecot_dir / "dovecot.conf"
        self.postfix_log = self.rundir / "postfix.log"
        self.dovecot_log = self.rundir / "dovecot.log"
        self.startup_seconds: float | None = None
        self._mail_owner = pwd.getpwnam(MAIL_OWNER)
        self._postfix_owner = pwd.getpwnam("postfix")
        self._postfix = _Daemon("Postfix", self.rundir / "postfix.stdout")
        self._dovecot = _Daemon("Dovecot", self.rundir / "dovecot.stdout")
        self.client = MailClient(
            smtp_port=self.smtp_port,
            imap_port=self.imap_port,
            postfix_dir=self.postfix_dir,
            tail=self.tail,
        )

    # -- files --------------------------------------------------------------------------------

    def _make_rundir(self) -> Path:
        rundir = Path(tempfile.mkdtemp(prefix="pontis-mail-", dir="/tmp"))
        rundir.chmod(0o755)  # the postfix, dovecot and mail users pass through it
        link = self.workdir / "run"
        if not link.exists():
            link.symlink_to(rundir)
        atexit.register(shutil.rmtree, rundir, ignore_errors=True)
        return rundir

    def main_cf(self) -> dict[str, str]:
        run = self.rundir
        settings = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.postfix_dir / "queue"),
            "data_directory": str(self.postfix_dir / "data"),
            "maillog_file": str(self.postfix_log),
            "maillog_file_prefixes": str(run),
            "myhostname": f"mail.{AGENCY_DOMAIN}",
            "mydomain": AGENCY_DOMAIN,
            "mydestination": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            # No DNS anywhere: every next hop is a literal IP, and other domains bounce.
            "disable_dns_lookups": "yes",
            "smtp_dns_support_level": "disabled",
            "lmtp_dns_support_level": "disabled",
            "smtpd_peername_lookup": "no",
            "default_transport": "error:mail outside the test domains is not delivered",
            # Agency mailboxes: any address is accepted here and Dovecot decides at LMTP RCPT,
            # so an unknown user gets a DSN to the sender (see the module docstring).
            "virtual_mailbox_domains": AGENCY_DOMAIN,
            "virtual_mailbox_maps": "",
            "virtual_alias_domains": "",
            "virtual_transport": f"lmtp:inet:127.0.0.1:{self.dovecot_lmtp_port}",
            "smtpd_reject_unlisted_recipient": "no",
            # The bridge's domain: relayed to its LMTP listener.
            "relay_domains": self.bridge_domain,
            "transport_maps": (
                f"inline:{{ {self.bridge_domain}=lmtp:inet:127.0.0.1:{self.bridge_lmtp_port} }}"
            ),
            # A fresh connection per delivery: tests start and stop LMTP listeners at will.
            "lmtp_connection_cache_on_demand": "no",
            "lmtp_connect_timeout": "5s",
            # Fast retries: a 4xx or a refused connection is retried after 1-2 s.
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "maximal_queue_lifetime": "10m",
            "bounce_queue_lifetime": "10m",
            "delay_warning_time": "0h",
            "smtputf8_enable": "yes",
            "message_size_limit": str(50 * 1024 * 1024),
            "in_flow_delay": "0s",
            "smtpd_error_sleep_time": "0s",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "biff": "no",
            "notify_classes": "",
        }
        settings.update(self.postfix_settings)
        return settings

    def master_cf(self) -> str:
        return MASTER_CF.format(smtp_port=self.smtp_port)

    def dovecot_conf(self) -> str:
        d = self.dovecot_dir
        uid, gid = self._mail_owner.pw_uid, self._mail_owner.pw_gid
        return f"""# Written by tests/e2e/mail.py: a throw-away Dovecot 2.3 on loopback.
instance_name = {self.rundir.name}
base_dir = {d / "base"}
state_dir = {d / "state"}
log_path = {self.dovecot_log}
protocols = imap lmtp
listen = 127.0.0.1
hostname = mail.{AGENCY_DOMAIN}
postmaster_address = postmaster@{AGENCY_DOMAIN}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
auth_verbose = yes
first_valid_uid = {uid}
first_valid_gid = {gid}
mail_location = maildir:~/Maildir
mail_fsync = never
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%Lu {self.users_dir}/%Lu
}}
userdb {{
  driver = passwd-file
  args = username_format=%Lu {self.users_dir}/%Lu
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {self.dovecot_lmtp_port}
  }}
}}
"""

    def _write_user(self, address: str, password: str) -> None:
        uid, gid = self._mail_owner.pw_uid, self._mail_owner.pw_gid
        home = self.maildir_root / address
        path = self.users_dir / address
        tmp = path.with_name(f".{address}.tmp")
        tmp.write_text(f"{address}:{{PLAIN}}{password}:{uid}:{gid}::{home}::\n")
        tmp.chmod(0o644)
        tmp.replace(path)

    def write_config(self) -> None:
        conf = self.postfix_dir / "conf"
        for path in (conf, self.postfix_dir / "queue", self.maildir_root):
            path.mkdir(parents=True, exist_ok=True)
        data = self.postfix_dir / "data"
        data.mkdir(mode=0o700, exist_ok=True)
        os.chown(data, self._postfix_owner.pw_uid, -1)
        os.chown(self.maildir_root, self._mail_owner.pw_uid, self._mail_owner.pw_gid)
        self.maildir_root.chmod(0o700)
        main_cf = "".join(f"{key} = {value}\n" for key, value in self.main_cf().items())
        (conf / "main.cf").write_text("# Written by tests/e2e/mail.py.\n" + main_cf)
        (conf / "master.cf").write_text(self.master_cf())
        # Every Postfix program waits (0.3 s at a time) until main.cf and master.cf are more than
        # a second old, in case an editor is still writing them: backdate them.
        past = time.time() - 60
        for name in ("main.cf", "master.cf"):
            os.utime(conf / name, (past, past))
        self.dovecot_config_path.write_text(self.dovecot_conf())

    # -- processes ----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._postfix.running and self._dovecot.running

    def tail(self, lines: int = 40) -> str:
        """The end of Postfix's and Dovecot's logs, for error messages."""
        logs = [self.postfix_log, self.dovecot_log]
        # The masters' own stdout and stderr: empty unless they fail before they can log.
        for daemon in (self._postfix, self._dovecot):
            with contextlib.suppress(OSError):
                if daemon.output_path.stat().st_size:
                    logs.append(daemon.output_path)
        return "\n".join(_tail(path, lines) for path in logs)

    async def _start_postfix(self) -> None:
        conf = str(self.postfix_dir / "conf")
        # `postfix check` creates the queue directories with their owners and modes and checks
        # the configuration (what `postfix start` does before it runs master). `set-permissions`
        # is not needed and takes ~3 s: it logs through postlogd, which is not running yet, and
        # waits a second per retry.
        argv = [POSTFIX, "-c", conf, "check"]
        check = await asyncio.create_subprocess_exec(
            *argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        output, _ = await check.communicate()
        if check.returncode != 0:
            raise RuntimeError(
                f"postfix -c {conf} check failed ({check.returncode}): "
                f"{output.decode(errors='replace')}\n{self.tail()}"
            )
        self._postfix.spawn([POSTFIX_MASTER, "-c", conf], cwd=self.rundir, new_session=False)

    async def _start_dovecot(self) -> None:
        # A stale socket or pid file in base_dir makes Dovecot refuse to start or stall logins.
        shutil.rmtree(self.dovecot_dir / "base", ignore_errors=True)
        (self.dovecot_dir / "state").mkdir(exist_ok=True)
        self._dovecot.spawn(
            [DOVECOT, "-F", "-c", str(self.dovecot_config_path)],
            cwd=self.rundir,
            new_session=True,
        )

    def _check_alive(self) -> None:
        for daemon in (self._postfix, self._dovecot):
            code = daemon.exit_code()
            if code is not None:
                # Postfix's master logs to syslog until postlogd runs, so its error (mostly: the
                # smtpd port is taken) is in none of our logs.
                hint = f" (is port {self.smtp_port} taken?)" if daemon is self._postfix else ""
                raise RuntimeError(
                    f"{daemon.name} exited with code {code} while starting{hint}\n{self.tail()}"
                )

    async def start(self) -> None:
        """Start Postfix and Dovecot and wait until smtpd, IMAP and Dovecot's LMTP greet."""
        began = time.monotonic()
        self.write_config()
        try:
            await asyncio.gather(self._start_postfix(), self._start_dovecot())
            greeters = [
                (self.smtp_port, "Postfix"),
                (self.imap_port, "Dovecot"),
                (self.dovecot_lmtp_port, "Dovecot"),
            ]
            while True:
                self._check_alive()
                if all(await asyncio.gather(*(_greets(*g) for g in greeters))):
                    break
                if time.monotonic() - began > START_TIMEOUT:
                    raise RuntimeError(
                        f"the mail servers did not answer within {START_TIMEOUT:.0f} s "
                        f"(smtp {self.smtp_port}, imap {self.imap_port}, "
                        f"lmtp {self.dovecot_lmtp_port})\n{self.tail()}"
                    )
                await asyncio.sleep(0.02)
        except BaseException:
            await self.stop()
            raise
        self.startup_seconds = time.monotonic() - began

    async def stop(self) -> None:
        """SIGTERM both masters (they stop their daemons), SIGKILL whatever is left; keep logs."""
        await asyncio.gather(self._postfix.stop(), self._dovecot.stop())
        for path in (self.postfix_log, self.dovecot_log):
            if path.exists():
                shutil.copyfile(path, self.workdir / path.name)

    async def __aenter__(self) -> MailServers:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- users and mail -----------------------------------------------------------------------

    def add_user(self, address: str, password: str) -> str:
        """Create a Dovecot user ``local@agency.test``; returns the address, lower-cased as
        Dovecot sees it. Works before or after ``start()``, and takes effect at once. (Changing
        the password of an existing user may take a second: Dovecot looks again at a passwd-file
        it has read at most once a second.)
        """
        address = address.lower()
        if address.rpartition("@")[2] != AGENCY_DOMAIN:
            raise ValueError(f"{address!r}: mailbox users live at @{AGENCY_DOMAIN}")
        if any(c in address + password for c in ":\n\r"):
            raise ValueError("the passwd-file format forbids ':' and newlines")
        self._write_user(address, password)
        return address

    # -- the client's methods, for tests that hold only the servers ----------------------------

    async def send(
        self, message: EmailMessage | bytes, *, mail_from: str, rcpt_to: list[str]
    ) -> dict[str, tuple[int, str]]:
        """:meth:`MailClient.send`: submit a message to smtpd, get the refused recipients."""
        return await self.client.send(message, mail_from=mail_from, rcpt_to=rcpt_to)

    async def all_mail(self, address: str, password: str) -> list[EmailMessage]:
        """:meth:`MailClient.all_mail`: every message in the user's INBOX, oldest first."""
        return await self.client.all_mail(address, password)

    async def wait_for_mail(
        self,
        address: str,
        password: str,
        *,
        timeout: float = 10,
        match: Callable[[EmailMessage], bool] | None = None,
    ) -> EmailMessage:
        """:meth:`MailClient.wait_for_mail`: the oldest matching message not returned before."""
        return await self.client.wait_for_mail(address, password, timeout=timeout, match=match)

    def queue(self) -> list[dict[str, object]]:
        """:meth:`MailClient.queue`: the messages in Postfix's queue (``postqueue -j``)."""
        return self.client.queue()

    def flush(self) -> None:
        """:meth:`MailClient.flush`: retry every deferred message now (``postqueue -f``)."""
        self.client.flush()
