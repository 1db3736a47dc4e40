"""The bridge's own DKIM, SPF, DMARC and ARC checks (``verifier: bridge``).

For a hub whose mail server does not verify senders. The results take the shape of the MTA's
Authentication-Results (:class:`AuthVerdict`), so one rule decides on both
(:mod:`bridge.email.verify`). Everything here is synchronous and runs in a worker thread; DNS
goes through :class:`~bridge.email.resolver.ThreadLookups`, back on the event loop. The one
heavy part, canonicalising and hashing the body for DKIM and ARC, holds the GIL for seconds on
a large mail (dkimpy's regular expressions over the whole body), so it runs in a worker
*process* (:func:`check_signatures`), with the keys looked up beforehand.

- DKIM and ARC: dkimpy, the reference implementation (Debian's maintainer of the mail
  authentication stack keeps it). At most :data:`MAX_SIGNATURES` signatures are tried; one with
  a body length limit (``l=``) does not count, since anything appended after the signed part
  would pass with it (RFC 6376 §8.2).
- SPF: pyspf, by the same maintainer; its lookups are redirected to ours by overriding the
  query's one DNS method, so it never resolves on its own.
- DMARC: RFC 7489 policy discovery and alignment, written here (a few lines) with the Public
  Suffix List of ``publicsuffixlist`` for organizational domains: the DMARC libraries on PyPI
  evaluate only the first DKIM signature (authheaders) or count a signature by a public suffix
  as aligned (dmarc).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dkim
import spf
from publicsuffixlist import PublicSuffixList

from bridge.email.protocol.authres import AuthVerdict
from bridge.email.resolver import DnsUnavailable, ThreadLookups

MAX_SIGNATURES = 5
"""DKIM signatures tried per mail: each costs a key lookup and a body hash."""

# The client of the MTA's own Received header: "from helo (rdns [192.0.2.1])" or
# "from [IPv6:2001:db8::1]"; only the part before " by " is read, and of it the *last* address
# literal, which is Postfix's "(rdns [addr])" comment: the HELO name comes first and is chosen
# by the client ("EHLO [192.0.2.1]" from anywhere), so an address in it proves nothing.
_RECEIVED_IP = re.compile(r"\[(?:ipv6:)?([0-9a-f:.]+)\]", re.IGNORECASE)
_RECEIVED_HELO = re.compile(r"^\s*from\s+([^\s(]+)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Client:
    """The SMTP client that handed the mail to the agency's mail system (for SPF)."""

    ip: str
    helo: str


def client_from_received(received: str | None) -> Client | None:
    """The client named by the trusted MTA's own (topmost) Received header, if it names one.

    Assumes the header was written by a trusted MTA in Postfix's form, ``from HELO (rdns
    [addr])``: the address the MTA saw is the last literal before `` by ``. Only the topmost
    Received header of a trusted MTA may be read; any other was written by the sender."""
    if not received:
        return None
    head = re.split(r"\sby\s", received, maxsplit=1, flags=re.IGNORECASE)[0]
    literals = _RECEIVED_IP.findall(head)
    if not literals:
        return None
    try:
        ip = str(ipaddress.ip_address(literals[-1]))
    except ValueError:
        return None
    helo = _RECEIVED_HELO.match(head)
    return Client(ip=ip, helo=helo.group(1).strip("[]") if helo else "")


class Authenticator:
    """DKIM, SPF, DMARC and ARC for one hub; thread-safe (it keeps only the suffix list)."""

    def __init__(self) -> None:
        self._psl = PublicSuffixList()  # the list shipped in the package, read once

    def organizational_domain(self, domain: str) -> str:
        return self._psl.privatesuffix(domain) or domain

    # --- DKIM and ARC keys ------------------------------------------------------------------

    @staticmethod
    def keys(fields: list[tuple[bytes, str]], lookups: ThreadLookups) -> dict[str, bytes | None]:
        """The key records the signatures in ``fields`` name (``s=``, ``d=``), looked up: the
        first :data:`MAX_SIGNATURES` DKIM signatures and the ARC sets' signatures and seals. A
        key that cannot be looked up is None (that signature fails; ``lookups`` remembers)."""
        names: list[str] = []
        dkim_count = 0
        for name, value in fields:
            if name == b"dkim-signature":
                dkim_count += 1
                if dkim_count > MAX_SIGNATURES:
                    continue
            elif name not in (b"arc-seal", b"arc-message-signature"):
                continue
            tags = signature_tags(value)
            if tags.get("s") and tags.get("d"):
                key = key_name(f"{tags['s']}._domainkey.{tags['d']}")
                if key not in names:
                    names.append(key)
        found: dict[str, bytes | None] = {}
        for key in names[: 2 * MAX_SIGNATURES]:
            found[key] = lookups.dkim_key(key)
        return found

    # --- SPF -------------------------------------------------------------------------------

    def spf(self, client: Client | None, mail_from: str, lookups: ThreadLookups) -> tuple[str, str]:
        """(result, checked domain): the MAIL FROM domain, or the HELO name for a bounce."""
        sender = mail_from.strip("<>")
        if client is None:
            return "none", sender.rpartition("@")[2].lower()
        query = _SpfQuery(i=client.ip, s=sender, h=client.helo or "unknown", querytime=0)
        query.pontis_lookups = lookups
        try:
            result, _code, _explanation = query.check()
        except DnsUnavailable:
            result = "temperror"
        domain = (sender.rpartition("@")[2] if sender else client.helo).lower().rstrip(".")
        return str(result), domain

    # --- DMARC -----------------------------------------------------------------------------

    def dmarc(
        self,
        from_domain: str,
        dkim_results: list[tuple[str, str]],
        spf_result: tuple[str, str],
        lookups: ThreadLookups,
    ) -> tuple[str, str]:
        """(result, policy) for ``from_domain``: ``pass``, ``fail``, ``none`` (no policy
        published) or ``temperror``; the policy is ``p`` (or ``sp`` for a subdomain)."""
        org = self.organizational_domain(from_domain)
        try:
            record = self._dmarc_record(from_domain, lookups)
            if record is None and org != from_domain:
                record = self._dmarc_record(org, lookups)
                policy = record.get("sp", record.get("p", "")) if record else ""
            else:
                policy = record.get("p", "") if record else ""
        except DnsUnavailable:
            return "temperror", ""
        if record is None:
            return "none", ""
        strict_dkim = record.get("adkim", "r") == "s"
        strict_spf = record.get("aspf", "r") == "s"
        if any(
            result == "pass" and self._aligned(domain, from_domain, strict=strict_dkim)
            for result, domain in dkim_results
        ):
            return "pass", policy
        if spf_result[0] == "pass" and self._aligned(spf_result[1], from_domain, strict_spf):
            return "pass", policy
        return "fail", policy

    def _aligned(self, domain: str, from_domain: str, strict: bool) -> bool:
        if not domain:
            return False
        if strict:
            return domain == from_domain
        org = self._psl.privatesuffix(domain)
        return org is not None and org == self._psl.privatesuffix(from_domain)

    @staticmethod
    def _dmarc_record(domain: str, lookups: ThreadLookups) -> dict[str, str] | None:
        """The tags of the one DMARC record at ``_dmarc.<domain>``; None if there is none or
        more than one (RFC 7489 §6.6.3), or if it has no valid ``p``."""
        records = [r for r in lookups.txt(f"_dmarc.{domain}") if r.startswith(b"v=DMARC1")]
        if len(records) != 1:
            return None
        tags: dict[str, str] = {}
        for item in records[0].decode("ascii", "replace").split(";"):
            key, sep, value = item.partition("=")
            if sep and key.strip().lower() not in tags:
                tags[key.strip().lower()] = value.strip().lower()
        if tags.get("p") not in ("none", "quarantine", "reject"):
            return None
        return tags

    # --- all -------------------------------------------------------------------------------

    def verdict(
        self,
        raw: bytes,
        fields: list[tuple[bytes, str]],
        *,
        from_domain: str,
        mail_from: str,
        client: Client | None,
        lookups: ThreadLookups,
        with_arc: bool,
        signatures: Callable[[bytes, dict[str, bytes | None], bool], Signatures],
    ) -> AuthVerdict:
        """The verdict on ``raw``; ``signatures`` runs :func:`check_signatures` (in a worker
        process) and waits for it."""
        dkim_results, arc = signatures(raw, self.keys(fields, lookups), with_arc)
        spf_result = self.spf(client, mail_from, lookups)
        dmarc, _policy = self.dmarc(from_domain, dkim_results, spf_result, lookups)
        return AuthVerdict(
            dmarc=dmarc,
            dmarc_from=from_domain,
            dkim=dkim_results,
            spf=spf_result,
            arc=arc,
        )


Signatures = tuple[list[tuple[str, str]], str | None]
"""(DKIM results as (result, signing domain), ARC chain validation or None)."""


def key_name(name: str) -> str:
    return name.strip().lower().rstrip(".")


def signature_tags(value: str) -> dict[str, str]:
    """The tag=value list of a DKIM-Signature or ARC header (RFC 6376 §3.2), whitespace
    removed; the first occurrence of a tag wins."""
    tags: dict[str, str] = {}
    for item in value.split(";"):
        key, sep, tag_value = item.partition("=")
        if sep:
            tags.setdefault(key.strip().lower(), "".join(tag_value.split()))
    return tags


def check_signatures(raw: bytes, keys: dict[str, bytes | None], with_arc: bool) -> Signatures:
    """DKIM (each signature, topmost first, at most :data:`MAX_SIGNATURES`) and, if
    ``with_arc``, the ARC chain (RFC 8617 §5.2: ``pass``, ``fail`` or ``none``) of ``raw``,
    with the key records in ``keys``. Runs in a worker process: no DNS, no state."""

    def dnsfunc(name: bytes | str, timeout: float = 5) -> bytes | None:
        text = name.decode("ascii", "replace") if isinstance(name, bytes) else name
        return keys.get(key_name(text))

    try:
        verifier = dkim.DKIM(raw, minkey=1024)
    except dkim.DKIMException:
        return [("permerror", "")], "fail" if with_arc else None
    count = sum(1 for name, _ in verifier.headers if name.lower() == b"dkim-signature")
    results = []
    for index in range(min(count, MAX_SIGNATURES)):
        try:
            passed = bool(verifier.verify(idx=index, dnsfunc=dnsfunc))
            fields: dict[bytes, bytes] = dict(verifier.signature_fields or {})
        except dkim.DKIMException:
            passed, fields = False, dict(getattr(verifier, "signature_fields", None) or {})
        domain = fields.get(b"d", b"").decode("ascii", "replace").lower().rstrip(".")
        if passed and b"l" in fields:
            results.append(("policy", domain))  # RFC 8601 §2.7.1: signed only in part
        else:
            results.append(("pass" if passed else "fail", domain))
    if not with_arc:
        return results, None
    try:
        cv, _results, _reason = dkim.ARC(raw, minkey=1024).verify(dnsfunc=dnsfunc)
    except dkim.DKIMException:
        return results, "fail"
    if cv is None:
        return results, "fail"  # a seal in the chain reported failure: the chain has ended
    return results, str(cv.decode("ascii") if isinstance(cv, bytes) else cv)


class _SpfQuery(spf.query):
    """pyspf's query with its DNS taken from :class:`ThreadLookups`: the library's own lookup
    function is a module global that would resolve with a resolver of its own."""

    pontis_lookups: ThreadLookups  # pyspf's own ``lookups`` counts mechanisms

    def dns(
        self, name: Any, qtype: str, cnames: Any = None, ignore_void: bool = False
    ) -> list[Any]:
        name = str(name).rstrip(".").lower()
        if not name or not all(0 < len(label) < 64 for label in name.split(".")):
            return []  # not a DNS name: pyspf treats it as no data
        key = (name, qtype)
        if key not in self.cache:
            try:
                records = self.pontis_lookups.records(name, qtype)
            except DnsUnavailable as err:
                raise spf.TempError(f"DNS {err}") from err
            self.cache[key] = [_spf_value(qtype, record) for record in records]
        result: list[Any] = self.cache[key]
        if not result and not ignore_void:
            self.void_lookups += 1
            if self.void_lookups > spf.MAX_VOID_LOOKUPS:
                raise spf.PermError(f"Void lookup limit of {spf.MAX_VOID_LOOKUPS} exceeded")
        return result


def _spf_value(qtype: str, record: Any) -> Any:
    """A record as pyspf's own dnspython lookup returns it."""
    if qtype in ("A", "AAAA"):
        return record.address
    if qtype == "MX":
        return (record.preference, record.exchange.to_text(True))
    if qtype == "PTR":
        return record.target.to_text(True)
    return record.strings  # TXT, SPF
