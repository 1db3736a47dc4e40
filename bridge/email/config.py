"""The ``connectors.email`` section: defaults and types (validated by the core)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bridge.email.protocol.addresses import InvalidAddress, normalize_address

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
# authserv-id of the Authentication-Results headers the bridge trusts: the one your mail
# server adds after checking SPF, DKIM and DMARC (and strips from incoming mail).
trusted_authserv_id: mail.example.org
# What a sender must pass before their mail reaches a room:
#   dmarc   - DMARC pass for the From domain (recommended);
#   aligned - DMARC pass, or a DKIM or SPF pass aligned with the From domain;
#   none    - nothing (only behind a gateway that already refuses spoofed mail).
sender_verification: dmarc
# Replies to a mail appear in the Matrix thread of the first mail of the conversation.
threads: true
# Quoted history and signatures of replies are folded away (kept in a collapsed block).
strip_quotes: true
"""

_PROTOCOLS = ("lmtp", "smtp")
_SECURITY = ("none", "starttls", "tls")
_VERIFICATION = ("dmarc", "aligned", "none")


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
        )
        for key, value, allowed in choices:
            if value not in allowed:
                problems.append(f"connectors.email.{key}: expected one of {', '.join(allowed)}")
        if self.sender_verification != "none" and not self.trusted_authserv_id:
            problems.append(
                "connectors.email.trusted_authserv_id: needed unless sender_verification is none"
            )
        for key, number in (
            ("inbound.max_message_mib", self.max_message_bytes),
            ("inbound.max_recipients", self.max_recipients),
            ("outbound.timeout", self.relay_timeout),
        ):
            if number <= 0:
                problems.append(f"connectors.email.{key}: must be greater than 0")
        return problems
