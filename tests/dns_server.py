"""A small authoritative DNS server on 127.0.0.1 for tests: a zone in a dict, over UDP.

The bridge's in-process sender verification (``verifier: bridge``) resolves DKIM keys, SPF and
DMARC records through the name server its config names; the tests point it here and publish
what a sending domain would. Runs on the test's event loop (dnspython parses and builds the
messages), so it answers while the test awaits.

``zone.add("s1._domainkey.example.org", "TXT", "v=DKIM1; k=rsa; p=...")`` publishes a record;
a name in ``failing`` gets SERVFAIL and one in ``silent`` no answer at all (a DNS outage);
``queries`` lists every (name, type) asked. Answers have a TTL of 0, so a change is seen at once.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset


def txt(value: str) -> str:
    """``value`` as TXT record text: quoted, split into strings of at most 255 characters."""
    chunks = [value[i : i + 255] for i in range(0, len(value), 255)] or [""]
    return " ".join('"' + chunk.replace("\\", "\\\\").replace('"', '\\"') + '"' for chunk in chunks)


class DnsServer(asyncio.DatagramProtocol):
    """Answers for the names in :attr:`records`; NXDOMAIN for every other name."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], list[str]] = defaultdict(list)
        self.failing: set[str] = set()
        self.silent: set[str] = set()
        self.queries: list[tuple[str, str]] = []
        self.port = 0
        self._transport: asyncio.DatagramTransport | None = None

    @staticmethod
    def _key(name: str) -> str:
        return name.lower().rstrip(".") + "."

    def add(self, name: str, rdtype: str, value: str) -> None:
        """Publish a record; TXT values are given unquoted (see :func:`txt`)."""
        text = txt(value) if rdtype.upper() == "TXT" else value
        self.records[(self._key(name), rdtype.upper())].append(text)

    def remove(self, name: str, rdtype: str | None = None) -> None:
        for key in [k for k in self.records if k[0] == self._key(name)]:
            if rdtype is None or key[1] == rdtype.upper():
                del self.records[key]

    @property
    def nameserver(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=("127.0.0.1", 0)
        )
        self._transport = transport
        self.port = transport.get_extra_info("sockname")[1]

    def stop(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        try:
            query = dns.message.from_wire(data)
        except Exception:
            return  # not a DNS message: a real server drops it too
        question = query.question[0]
        name = question.name.to_text().lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name.rstrip("."), rdtype))
        if name.rstrip(".") in self.silent:
            return
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if name.rstrip(".") in self.failing:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif not any(key[0] == name for key in self.records):
            response.set_rcode(dns.rcode.NXDOMAIN)
        else:
            values = self.records.get((name, rdtype), [])
            if values:
                rrset = dns.rrset.from_text_list(question.name, 0, "IN", rdtype, values)
                response.answer.append(rrset)
        assert self._transport is not None
        self._transport.sendto(response.to_wire(max_size=65535), addr)
