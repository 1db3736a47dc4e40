"""A sending domain for verification tests: its DKIM key, and the records it publishes.

Signing is dkimpy's own (``dkim.sign``, ``dkim.arc_sign``), as a sending mail server or a
mailing list would do it; the public key, SPF and DMARC records go into a
:class:`tests.dns_server.DnsServer` zone.
"""

from __future__ import annotations

import base64
from functools import cache

import dkim
from Crypto.PublicKey import RSA

from tests.dns_server import DnsServer

SIGNED_HEADERS = [b"from", b"to", b"subject", b"date", b"message-id"]


@cache
def _key(seed: str) -> RSA.RsaKey:
    """One 1024-bit key per name for the whole test run (making one takes a moment)."""
    return RSA.generate(1024)


class SendingDomain:
    def __init__(self, domain: str, selector: str = "s1") -> None:
        self.domain = domain
        self.selector = selector
        key = _key(f"{domain}/{selector}")
        self.private_pem = key.export_key("PEM", pkcs=1)
        self.public_b64 = base64.b64encode(key.publickey().export_key("DER")).decode("ascii")

    def publish(
        self,
        zone: DnsServer,
        *,
        spf: str | None = "v=spf1 ip4:127.0.0.1 -all",
        dmarc: str | None = "v=DMARC1; p=reject",
    ) -> None:
        """The key at ``<selector>._domainkey.<domain>``, and the SPF and DMARC records."""
        zone.add(f"{self.selector}._domainkey.{self.domain}", "TXT", self.key_record)
        if spf is not None:
            zone.add(self.domain, "TXT", spf)
        if dmarc is not None:
            zone.add(f"_dmarc.{self.domain}", "TXT", dmarc)

    @property
    def key_record(self) -> str:
        return f"v=DKIM1; k=rsa; p={self.public_b64}"

    def sign(self, raw: bytes, *, length: bool = False, relaxed_body: bool = False) -> bytes:
        """``raw`` with a DKIM-Signature of this domain on top (``length``: with ``l=``;
        ``relaxed_body``: c=relaxed/relaxed, as most large senders sign)."""
        signature = dkim.sign(
            raw,
            self.selector.encode(),
            self.domain.encode(),
            self.private_pem,
            include_headers=SIGNED_HEADERS,
            length=length,
            canonicalize=(b"relaxed", b"relaxed" if relaxed_body else b"simple"),
        )
        return bytes(signature) + raw

    def arc_seal(self, raw: bytes, authserv_id: str) -> bytes:
        """``raw`` with this domain's ARC set on top, sealing the Authentication-Results with
        ``authserv_id`` that ``raw`` carries (as a forwarder does after checking a mail)."""
        headers = dkim.arc_sign(
            raw,
            self.selector.encode(),
            self.domain.encode(),
            self.private_pem,
            authserv_id.encode(),
        )
        return b"".join(headers) + raw
