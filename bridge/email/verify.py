"""Is the sender who the From header says? The decision on every mail before a room sees it.

Two verifiers (``verifier`` in the config, docs/email.md "Sender verification"):

- ``mta``: the mail server checked SPF, DKIM and DMARC and wrote Authentication-Results. Only
  the topmost one with the trusted authserv-id counts, and only when the mail server is the
  peer that delivered the mail (loopback or ``trusted_mta_addresses``): anything else that
  connects to the bridge's port could write any header it likes.
- ``bridge``: the bridge checks DKIM, SPF, DMARC and ARC itself (:mod:`bridge.email.authenticate`),
  with DNS from its own resolver; for a mail server that does not verify.

Either way, mail that fails directly may still pass through ARC (RFC 8617): when the chain
validates and its newest seal is by a forwarder the operator lists (``arc_forwarders``), the
forwarder's own ARC-Authentication-Results decide (a newest seal by the hub's own mail server,
``arc_own_sealers``, is looked past), read with the same rule. A mail with more
than one From header, or whose From the bridge's parser read differently from the raw header,
is never verified: those are the tricks that make a verifier and a reader see two senders.

The work runs in a small thread pool, never on the event loop, and the DNS lookups of the
in-process checks wait on the loop from the worker thread
(:class:`~bridge.email.resolver.ThreadLookups`). Hashing the body for DKIM and ARC goes one step
further, to a worker process (``forkserver``, as the parser): dkimpy canonicalises with
regular expressions that hold the GIL, and a thread would stall the loop for the whole body.
"""

from __future__ import annotations

import asyncio
import ipaddress
import multiprocessing
import re
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from email.utils import getaddresses

from bridge.email.authenticate import (
    Authenticator,
    Client,
    Signatures,
    check_signatures,
    client_from_received,
    signature_tags,
)
from bridge.email.config import EmailConfig
from bridge.email.protocol.authres import (
    AuthVerdict,
    read_arc_authentication_results,
    read_authentication_results,
    sender_verified,
)
from bridge.email.resolver import Resolver, ThreadLookups

WORKERS = 4
"""Mails verified at once; more wait their turn (their lookups mostly wait on DNS)."""
SIGNATURE_WORKERS = 2
"""Processes hashing bodies for DKIM and ARC (``verifier: bridge``)."""
SIGNATURE_TIMEOUT = 60.0
"""Seconds one mail's signatures may take (25 MiB take about 3 s); then the mail server is
told to try later."""

_NAMES = frozenset(
    (
        b"from",
        b"received",
        b"authentication-results",
        b"dkim-signature",
        b"arc-seal",
        b"arc-message-signature",
        b"arc-authentication-results",
    )
)


class VerificationUnavailable(Exception):
    """The signature worker could not run (crashed, too slow, shutting down)."""


@dataclass(frozen=True, slots=True)
class SenderCheck:
    """The decision on one mail. ``reason`` says why, for the log and for the room's warning;
    ``temporary``: a DNS failure left it open, so the mail server should try again later."""

    verified: bool
    reason: str
    temporary: bool = False


def header_fields(raw: bytes) -> list[tuple[bytes, str]]:
    """The header fields of ``raw`` that verification reads, unfolded, in the mail's order:
    (lower-case name, value). Linear in the size of the header section."""
    crlf = raw.find(b"\r\n\r\n")
    end = raw.find(b"\n\n", 0, len(raw) if crlf == -1 else crlf)
    if end == -1 or (crlf != -1 and crlf < end):
        end = crlf
    section = raw if end == -1 else raw[:end]
    fields: list[tuple[bytes, list[bytes]]] = []
    for line in section.split(b"\n"):
        line = line.rstrip(b"\r")
        if line[:1] in (b" ", b"\t"):
            if fields:
                fields[-1][1].append(line.strip())
            continue
        name, sep, value = line.partition(b":")
        fields.append((name.strip().lower() if sep else b"", [value.strip()]))
    return [
        (name, b" ".join(parts).decode("utf-8", "replace"))
        for name, parts in fields
        if name in _NAMES
    ]


def ascii_domain(domain: str) -> str:
    """``domain`` lower-case without a final dot, in its ASCII (IDNA) form when it has one."""
    domain = domain.strip().lower().rstrip(".")
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return domain


class SenderVerifier:
    """Decides on senders for one email connector. :meth:`close` ends its threads."""

    def __init__(self, cfg: EmailConfig) -> None:
        self._cfg = cfg
        self._networks = [
            ipaddress.ip_network(net, strict=False) for net in cfg.trusted_mta_addresses
        ]
        self._forwarders = frozenset(cfg.arc_forwarders)
        self._executor = ThreadPoolExecutor(WORKERS, thread_name_prefix="pontis-email-verify")
        self._processes: ProcessPoolExecutor | None = None
        self._processes_lock = threading.Lock()
        self._resolver: Resolver | None = None
        self._authenticator: Authenticator | None = None
        if cfg.verifier == "bridge" and cfg.sender_verification != "none":
            self._resolver = Resolver(cfg.dns_nameservers, cfg.dns_timeout)
            self._authenticator = Authenticator()

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        with self._processes_lock:
            if self._processes is not None:
                self._processes.shutdown(wait=False, cancel_futures=True)
                self._processes = None

    def _signatures(self, raw: bytes, keys: dict[str, bytes | None], with_arc: bool) -> Signatures:
        """:func:`check_signatures` in a worker process; waits in the calling (worker) thread."""
        with self._processes_lock:
            if self._processes is None:
                context = multiprocessing.get_context("forkserver")
                self._processes = ProcessPoolExecutor(SIGNATURE_WORKERS, mp_context=context)
            pool = self._processes
        try:
            return pool.submit(check_signatures, raw, keys, with_arc).result(SIGNATURE_TIMEOUT)
        except (BrokenProcessPool, RuntimeError, TimeoutError) as err:
            with self._processes_lock:
                if self._processes is pool:  # the next mail starts a new pool
                    self._processes = None
            pool.shutdown(wait=False, cancel_futures=True)
            raise VerificationUnavailable(f"the DKIM worker failed: {err!r}") from err

    def trusted_peer(self, peer: str | None) -> bool:
        """Whether ``peer`` (the address that delivered the mail) is the operator's mail
        server: a loopback address, or one in ``trusted_mta_addresses``."""
        if not peer:
            return False
        try:
            address = ipaddress.ip_address(peer.split("%")[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return address.is_loopback or any(address in net for net in self._networks)

    async def check(
        self, raw: bytes, from_domain: str, *, mail_from: str, peer: str | None
    ) -> SenderCheck:
        """The decision on mail ``raw`` whose From domain (as the bridge's parser read it) is
        ``from_domain``, delivered by ``peer`` with envelope sender ``mail_from``."""
        if self._cfg.sender_verification == "none":
            return SenderCheck(True, "sender verification is off")
        lookups = None
        if self._resolver is not None:
            lookups = ThreadLookups(self._resolver, self._cfg.dns_timeout)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, self._decide, raw, ascii_domain(from_domain), mail_from, peer, lookups
        )

    # --- in the worker thread --------------------------------------------------------------

    def _decide(
        self,
        raw: bytes,
        from_domain: str,
        mail_from: str,
        peer: str | None,
        lookups: ThreadLookups | None,
    ) -> SenderCheck:
        if lookups is not None:
            lookups.start_clock()
        fields = header_fields(raw)
        problem = _from_problem(fields, from_domain)
        if problem is not None:
            return SenderCheck(False, problem)
        require = self._cfg.sender_verification
        trusted = self.trusted_peer(peer)
        if lookups is None or self._authenticator is None:
            if not trusted:
                return SenderCheck(
                    False, f"delivered by {peer or 'an unknown peer'}, not by a trusted mail server"
                )
            values = [v for name, v in fields if name == b"authentication-results"]
            verdict = read_authentication_results(values, self._cfg.trusted_authserv_id)
        else:
            try:
                verdict = self._authenticator.verdict(
                    raw,
                    fields,
                    from_domain=from_domain,
                    mail_from=mail_from,
                    client=self._client(fields, peer, trusted),
                    lookups=lookups,
                    with_arc=bool(self._forwarders),
                    signatures=self._signatures,
                )
            except VerificationUnavailable as err:
                return SenderCheck(False, str(err), temporary=True)
        if sender_verified(verdict, from_domain, require):
            return SenderCheck(True, _describe(verdict))
        if verdict.arc == "pass":
            forwarded = self._forwarded(fields, from_domain, require)
            if forwarded is not None:
                return SenderCheck(True, forwarded)
        temporary = lookups is not None and bool(lookups.failures)
        reason = _describe(verdict)
        if temporary and lookups is not None:
            reason += f"; DNS failed: {lookups.failures[0]}"
        return SenderCheck(False, reason, temporary=temporary)

    @staticmethod
    def _client(fields: list[tuple[bytes, str]], peer: str | None, trusted: bool) -> Client | None:
        """Whose address SPF checks: behind a trusted mail server the client its own (topmost)
        Received header names; a peer that is no trusted mail server is the client itself."""
        if not trusted:
            return Client(ip=peer, helo="") if peer else None
        received = next((v for name, v in fields if name == b"received"), None)
        return client_from_received(received)

    def _forwarded(
        self, fields: list[tuple[bytes, str]], from_domain: str, require: str
    ) -> str | None:
        """Why the mail is verified through ARC, or None: the newest ARC set must be sealed by a
        listed forwarder whose ARC-Authentication-Results verify the From domain.

        The one exception: with ``verifier: mta``, a newest set sealed by the hub's own mail
        server (its ARC-Seal ``d=`` in ``arc_own_sealers``) is skipped and the set below it
        decides. Never is a set skipped for what its ARC-Authentication-Results say: anyone can
        write the hub's authserv-id there, and skipping would let a genuine older set vouch
        for a body changed and re-sealed since."""
        seals: dict[int, str] = {}
        for name, value in fields:
            if name == b"arc-seal":
                tags = signature_tags(value)
                if tags.get("i", "").isdigit():
                    seals.setdefault(int(tags["i"]), tags.get("d", "").lower().rstrip("."))
        results: dict[int, AuthVerdict] = {}
        for name, value in fields:
            if name == b"arc-authentication-results":
                read = read_arc_authentication_results(value)
                if read is not None:
                    results.setdefault(read[0], read[2])
        instances = sorted(seals, reverse=True)
        own = self._cfg.arc_own_sealers if self._cfg.verifier == "mta" else ()
        if instances and seals[instances[0]] in own:
            instances = instances[1:]
        if not instances:
            return None
        forwarder = seals[instances[0]]
        if forwarder not in self._forwarders:
            return None
        verdict = results.get(instances[0], AuthVerdict())
        if sender_verified(verdict, from_domain, require):
            return f"forwarded by {forwarder}, which verified it ({_describe(verdict)})"
        return None


def _from_problem(fields: list[tuple[bytes, str]], from_domain: str) -> str | None:
    """Why the From header cannot be verified at all, or None."""
    values = [value for name, value in fields if name == b"from"]
    if len(values) != 1:
        return f"the mail has {len(values)} From headers"
    addresses = [address for _, address in getaddresses(values) if address]
    if len(addresses) != 1 or "@" not in addresses[0]:
        return "the From header does not hold exactly one address"
    if ascii_domain(addresses[0].rpartition("@")[2]) != from_domain:
        return "the From header reads as two different senders"
    return None


def _describe(verdict: AuthVerdict) -> str:
    """The verdict in Authentication-Results words, for logs and the room's warning."""
    parts = []
    if verdict.dmarc is not None:
        parts.append(f"dmarc={_word(verdict.dmarc)}")
    parts += [f"dkim={_word(result)} ({_word(domain)})" for result, domain in verdict.dkim[:3]]
    if verdict.spf is not None:
        parts.append(f"spf={_word(verdict.spf[0])} ({_word(verdict.spf[1])})")
    if verdict.arc is not None:
        parts.append(f"arc={_word(verdict.arc)}")
    return ", ".join(parts) or "no verification results"


def _word(value: str) -> str:
    """A result or domain as the room may read it: the sender writes DKIM's ``d=`` and could
    put a sentence there ("example.org; verified"), so only domain characters are kept."""
    return re.sub(r"[^a-z0-9._-]", "", value.lower())[:64] or "?"
