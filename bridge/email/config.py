"""The ``connectors.email`` section: defaults and types (validated by the core)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.email.protocol.addresses import InvalidAddress, normalize_address
from bridge.email.protocol.limits import ParseLimits
from bridge.email.resolver import parse_nameserver

EXAMPLE_CONFIG = """\
enabled: false
# Mail domain of the bridge: portal addresses are <name>.<token>@<domain>. Your mail server
# routes this domain to the bridge (Postfix: transport_maps → lmtp:inet:127.0.0.1:24025).
domain: mail.example.org
# Where the bridge listens for mail from your mail server. Keep it on loopback or a private
# network: the bridge trusts the Authentication-Results your server adds.
inbound:
    # lmtp (recommended: one answer per recipient, RFC 2033) or smtp.
    protocol: lmtp
    host: 127.0.0.1
    port: 24025
    # Largest mail accepted, attachments included, in MiB.
    max_message_mib: 25
    # Most bridge addresses one mail may be sent to at once.
    max_recipients: 50
# The SMTP relay (your mail server) that sends mail from Matrix.
outbound:
    host: 127.0.0.1
    port: 25
    # none (only for a relay on loopback), starttls or tls.
    security: none
    # SMTP AUTH, if the relay wants it. Empty: no AUTH.
    username: ""
    password: ""
    # Seconds to wait for the relay before retrying later.
    timeout: 30
# authserv-id of the Authentication-Results headers the bridge trusts (verifier: mta): the
# one your mail server adds after checking SPF, DKIM and DMARC (and strips from incoming mail).
trusted_authserv_id: mail.example.org
# What a sender must pass before their mail reaches a room:
#   dmarc   - DMARC pass for the From domain (recommended);
#   aligned - DMARC pass, or a DKIM or SPF pass aligned with the From domain;
#   none    - nothing (only behind a gateway that already refuses spoofed mail).
sender_verification: dmarc
# Who checks SPF, DKIM, DMARC and ARC:
#   mta    - your mail server (rspamd, OpenDKIM + OpenDMARC). The bridge reads only the topmost
#            Authentication-Results with trusted_authserv_id, and only on mail delivered from
#            loopback or from trusted_mta_addresses;
#   bridge - the bridge itself, with the DNS below: for a mail server that does not verify.
verifier: mta
# Mail servers besides loopback that deliver to the bridge (addresses or networks such as
# 192.0.2.0/24): their Authentication-Results count, and their Received header names the
# client whose address SPF checks.
trusted_mta_addresses: []
# Mail whose sender is not verified:
#   refuse - answered 550 (the sender gets a bounce);
#   mark   - delivered from a separate ghost named "... (unverified)", with a warning above it.
unverified_mail: refuse
# Forwarders and mailing lists whose ARC seal (RFC 8617; the d= of their ARC-Seal) counts:
# mail they forward is verified if they verified it, though forwarding broke SPF or DKIM.
# List only services you trust to check senders, e.g. [lists.example.org].
arc_forwarders: []
# verifier: mta only. The d= of the ARC-Seal your own mail server adds after checking (if it
# seals at all, e.g. rspamd's ARC module): the newest ARC set is skipped if, and only if, it is
# sealed by one of these, so the forwarder's set below it decides. Empty: nothing is skipped.
arc_own_sealers: []
# DNS for verifier: bridge.
dns:
    # Name servers as "address" or "address:port"; empty: the system's (/etc/resolv.conf).
    nameservers: []
    # Seconds for all the lookups of one mail; then the mail server is told to try later.
    timeout: 10
# Replies to a mail appear in the Matrix thread of the first mail of the conversation.
threads: true
# Quoted history and signatures of replies are folded away (kept in a collapsed block).
strip_quotes: true
# Records: the raw bytes of every mail received and sent, kept in the database (compressed,
# by SHA-256) so that an admin can show what came in and what went out
# (`pontis email record <sha256|message-id>`).
records:
    # Days a record is kept; 0 keeps records for ever.
    keep_days: 365
# Reading mail (MIME) happens in worker processes, so a hostile mail cannot stall the bridge.
# A mail beyond these limits is refused (554); the defaults leave real mail a wide margin.
parsing:
    # Worker processes; each reads one mail at a time.
    workers: 1
    # Seconds one mail may take to read; then its worker is replaced and the mail refused.
    timeout: 30
    # Memory one worker may use, in MiB (a mail needing more is refused). 0: no limit.
    memory_mib: 1024
    # MIME parts (the message counts as one), nesting depth, header lines and header KiB over
    # all parts, and MiB of decoded bodies and attachments.
    max_parts: 100
    max_depth: 10
    max_header_lines: 5000
    max_header_kib: 1024
    max_decoded_mib: 128
    # CA certificates (PEM file) that S/MIME signatures are checked against; empty: the
    # system's. A signature from a certificate outside them is shown as "signer not trusted".
    smime_trust_anchors: ""
# Files attached to incoming mail. One that is not allowed is withheld: the room gets a notice
# naming it and why, and the whole mail stays in its record.
attachments:
    # MIME types allowed, exact (application/pdf) or by family (image/*); */* allows any.
    allowed_types: ["*/*"]
    # Largest file passed on, in MiB.
    max_mib: 25
"""

_PROTOCOLS = ("lmtp", "smtp")
_SECURITY = ("none", "starttls", "tls")
_VERIFICATION = ("dmarc", "aligned", "none")
_VERIFIERS = ("mta", "bridge")
_UNVERIFIED = ("refuse", "mark")


@dataclass(frozen=True, slots=True)
class EmailConfig:
    domain: str
    protocol: str
    listen_host: str
    listen_port: int
    max_message_bytes: int
    max_recipients: int
    relay_host: str
    relay_port: int
    relay_security: str
    relay_username: str
    relay_password: str
    relay_timeout: float
    trusted_authserv_id: str
    sender_verification: str
    threads: bool
    strip_quotes: bool
    # Sender verification (docs/email.md, "Sender verification").
    verifier: str = "mta"
    trusted_mta_addresses: tuple[str, ...] = ()
    unverified_mail: str = "refuse"
    arc_forwarders: tuple[str, ...] = ()
    arc_own_sealers: tuple[str, ...] = ()
    dns_nameservers: tuple[str, ...] = ()
    dns_timeout: float = 10.0
    records_keep_days: float = 365.0
    # Reading mail and its attachments (docs/email.md, "What a mail may cost").
    parse_limits: ParseLimits = ParseLimits()
    parse_workers: int = 1
    parse_timeout: float = 30.0
    parse_memory_bytes: int = 1024 * 1024 * 1024
    smime_trust_anchors: str = ""
    attachment_types: tuple[str, ...] = ("*/*",)
    attachment_max_bytes: int = 25 * 1024 * 1024

    @classmethod
    def from_section(cls, section: dict[str, Any]) -> EmailConfig:
        inbound, outbound = section["inbound"], section["outbound"]
        return cls(
            domain=str(section["domain"]).strip().lower(),
            protocol=str(inbound["protocol"]).lower(),
            listen_host=str(inbound["host"]),
            listen_port=int(inbound["port"]),
            max_message_bytes=int(inbound["max_message_mib"]) * 1024 * 1024,
            max_recipients=int(inbound["max_recipients"]),
            relay_host=str(outbound["host"]),
            relay_port=int(outbound["port"]),
            relay_security=str(outbound["security"]).lower(),
            relay_username=str(outbound["username"]),
            relay_password=str(outbound["password"]),
            relay_timeout=float(outbound["timeout"]),
            trusted_authserv_id=str(section["trusted_authserv_id"]).strip(),
            sender_verification=str(section["sender_verification"]).lower(),
            threads=bool(section["threads"]),
            strip_quotes=bool(section["strip_quotes"]),
            verifier=str(section.get("verifier", "mta")).lower(),
            trusted_mta_addresses=_strings(section.get("trusted_mta_addresses")),
            unverified_mail=str(section.get("unverified_mail", "refuse")).lower(),
            arc_forwarders=tuple(
                d.lower().rstrip(".") for d in _strings(section.get("arc_forwarders"))
            ),
            arc_own_sealers=tuple(
                d.lower().rstrip(".") for d in _strings(section.get("arc_own_sealers"))
            ),
            dns_nameservers=_strings((section.get("dns") or {}).get("nameservers")),
            dns_timeout=float((section.get("dns") or {}).get("timeout", 10)),
            records_keep_days=float((section.get("records") or {}).get("keep_days", 365)),
            **_parsing(section.get("parsing") or {}, section.get("attachments") or {}),
        )

    def problems(self) -> list[str]:
        """What is wrong with the values, one line per problem, each naming its key."""
        problems = []
        try:
            normalize_address(f"postmaster@{self.domain}")
        except InvalidAddress as err:
            problems.append(f"connectors.email.domain: {err}")
        choices = (
            ("inbound.protocol", self.protocol, _PROTOCOLS),
            ("outbound.security", self.relay_security, _SECURITY),
            ("sender_verification", self.sender_verification, _VERIFICATION),
            ("verifier", self.verifier, _VERIFIERS),
            ("unverified_mail", self.unverified_mail, _UNVERIFIED),
        )
        for key, value, allowed in choices:
            if value not in allowed:
                problems.append(f"connectors.email.{key}: expected one of {', '.join(allowed)}")
        if (
            self.sender_verification != "none"
            and self.verifier == "mta"
            and not self.trusted_authserv_id
        ):
            problems.append(
                "connectors.email.trusted_authserv_id: needed unless sender_verification is none"
                " or verifier is bridge"
            )
        problems += _verification_problems(self)
        problems += _parsing_problems(self)
        if self.records_keep_days < 0:
            problems.append("connectors.email.records.keep_days: must be 0 (for ever) or more")
        for key, number in (
            ("inbound.max_message_mib", self.max_message_bytes),
            ("inbound.max_recipients", self.max_recipients),
            ("outbound.timeout", self.relay_timeout),
            ("dns.timeout", self.dns_timeout),
        ):
            if number <= 0:
                problems.append(f"connectors.email.{key}: must be greater than 0")
        return problems


def _strings(value: Any) -> tuple[str, ...]:
    """A list of strings from the config (a lone string counts as a list of one)."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    return tuple(str(item).strip() for item in value if str(item).strip())


def _verification_problems(cfg: EmailConfig) -> list[str]:
    """The sender verification keys that cannot work as written."""
    problems = []
    for network in cfg.trusted_mta_addresses:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            problems.append(
                f"connectors.email.trusted_mta_addresses: {network!r} is not an address or"
                " network (like 192.0.2.10 or 192.0.2.0/24)"
            )
    for server in cfg.dns_nameservers:
        try:
            parse_nameserver(server)
        except ValueError as err:
            problems.append(f"connectors.email.dns.nameservers: {err}")
    for key, domains, whose in (
        ("arc_forwarders", cfg.arc_forwarders, "the forwarder's"),
        ("arc_own_sealers", cfg.arc_own_sealers, "your mail server's"),
    ):
        for domain in domains:
            if "@" in domain or not domain or " " in domain:
                problems.append(
                    f"connectors.email.{key}: {domain!r} is not a domain (the d= of {whose}"
                    " ARC-Seal)"
                )
    if cfg.arc_own_sealers and cfg.verifier != "mta":
        problems.append(
            "connectors.email.arc_own_sealers: only for verifier: mta (with verifier: bridge no"
            " mail server sealed before the bridge checks)"
        )
    return problems


_MIB = 1024 * 1024


def _parsing(parsing: dict[str, Any], attachments: dict[str, Any]) -> dict[str, Any]:
    """The ``parsing`` and ``attachments`` sections as EmailConfig fields."""
    defaults = ParseLimits()
    return {
        "parse_limits": ParseLimits(
            max_parts=int(parsing.get("max_parts", defaults.max_parts)),
            max_depth=int(parsing.get("max_depth", defaults.max_depth)),
            max_header_lines=int(parsing.get("max_header_lines", defaults.max_header_lines)),
            max_header_bytes=int(
                float(parsing.get("max_header_kib", defaults.max_header_bytes / 1024)) * 1024
            ),
            max_decoded_bytes=int(
                float(parsing.get("max_decoded_mib", defaults.max_decoded_bytes / _MIB)) * _MIB
            ),
        ),
        "parse_workers": int(parsing.get("workers", 1)),
        "parse_timeout": float(parsing.get("timeout", 30)),
        "parse_memory_bytes": int(float(parsing.get("memory_mib", 1024)) * _MIB),
        "smime_trust_anchors": str(parsing.get("smime_trust_anchors") or ""),
        "attachment_types": tuple(
            t.lower() for t in _strings(attachments.get("allowed_types", ["*/*"]))
        ),
        "attachment_max_bytes": int(float(attachments.get("max_mib", 25)) * _MIB),
    }


def _parsing_problems(cfg: EmailConfig) -> list[str]:
    problems = []
    limits = cfg.parse_limits
    for key, number in (
        ("parsing.workers", cfg.parse_workers),
        ("parsing.timeout", cfg.parse_timeout),
        ("parsing.max_parts", limits.max_parts),
        ("parsing.max_depth", limits.max_depth),
        ("parsing.max_header_lines", limits.max_header_lines),
        ("parsing.max_header_kib", limits.max_header_bytes),
        ("parsing.max_decoded_mib", limits.max_decoded_bytes),
        ("attachments.max_mib", cfg.attachment_max_bytes),
    ):
        if number <= 0:
            problems.append(f"connectors.email.{key}: must be greater than 0")
    if limits.max_depth > 50:
        problems.append("connectors.email.parsing.max_depth: at most 50 (the parser recurses)")
    if cfg.parse_memory_bytes < 0:
        problems.append("connectors.email.parsing.memory_mib: must be 0 (no limit) or more")
    elif 0 < cfg.parse_memory_bytes < 256 * _MIB:
        problems.append("connectors.email.parsing.memory_mib: at least 256 (or 0)")
    if cfg.smime_trust_anchors and not Path(cfg.smime_trust_anchors).is_file():
        problems.append(
            f"connectors.email.parsing.smime_trust_anchors: {cfg.smime_trust_anchors} is not a"
            " file (a PEM file of CA certificates)"
        )
    for pattern in cfg.attachment_types:
        major, slash, minor = pattern.partition("/")
        if not slash or not major or not minor or (major == "*" and minor != "*"):
            problems.append(
                f"connectors.email.attachments.allowed_types: {pattern!r} is not a MIME type"
                " (like application/pdf, image/* or */*)"
            )
    return problems
