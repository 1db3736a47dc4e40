"""Limits on what one mail may cost to parse, counted by the parser itself while it parses.

A mail of a few MiB can make the stdlib parser build millions of parts (one per delimiter line),
nest thousands deep (and die of ``RecursionError``), or carry 100,000 header lines. A pre-scan
with regular expressions guesses at what the parser will do and misses forms it did not foresee
(``boundary*=`` in RFC 2231 form slipped past the one this replaced). Here the parser counts:
:class:`CountingFeedParser` is ``email.feedparser.BytesFeedParser`` with a hook where it creates
each part and where it reads each header block, so whatever syntax made the parser see a part,
it is counted, and parsing stops at the first part over the limit, after linear work.

Decoded sizes (base64, quoted-printable, a re-serialised ``message/rfc822``) are counted by the
reader of the parsed tree through :meth:`Budget.decoded`.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.feedparser import BytesFeedParser
from email.message import Message
from email.policy import Policy
from typing import Any


class LimitExceeded(ValueError):
    """The mail goes beyond a :class:`ParseLimits` limit; the message says which."""


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """What one mail may cost. The defaults let real mail through with a wide margin (a
    newsletter has ~10 parts, a long Received chain ~200 header lines)."""

    max_parts: int = 100
    """MIME parts in all, the message itself included."""
    max_depth: int = 10
    """Nesting of multipart and message/* parts below the message."""
    max_header_lines: int = 5000
    """Header lines (continuation lines included) over all parts."""
    max_header_bytes: int = 1024 * 1024
    """Bytes of header lines over all parts."""
    max_decoded_bytes: int = 128 * 1024 * 1024
    """Bytes of decoded bodies and attachments over all parts."""


class Budget:
    """The running counts of one parse against its :class:`ParseLimits`."""

    def __init__(self, limits: ParseLimits) -> None:
        self.limits = limits
        self.parts = 0
        self.header_lines = 0
        self.header_bytes = 0
        self.decoded_bytes = 0

    def part(self, depth: int) -> None:
        self.parts += 1
        if self.parts > self.limits.max_parts:
            raise LimitExceeded(f"more than {self.limits.max_parts} MIME parts")
        if depth > self.limits.max_depth:
            raise LimitExceeded(f"MIME nesting deeper than {self.limits.max_depth} levels")

    def headers(self, lines: list[str]) -> None:
        self.header_lines += len(lines)
        if self.header_lines > self.limits.max_header_lines:
            raise LimitExceeded(f"more than {self.limits.max_header_lines} header lines")
        self.header_bytes += sum(len(line) for line in lines)
        if self.header_bytes > self.limits.max_header_bytes:
            raise LimitExceeded(f"more than {self.limits.max_header_bytes} bytes of headers")

    def decoded(self, size: int) -> None:
        self.decoded_bytes += size
        if self.decoded_bytes > self.limits.max_decoded_bytes:
            raise LimitExceeded(f"more than {self.limits.max_decoded_bytes} bytes once decoded")


class CountingFeedParser(BytesFeedParser):
    """``BytesFeedParser`` that charges every part and header block to ``budget``.

    Overrides two internal methods of ``email.feedparser.FeedParser`` (unchanged since Python
    3.3): ``_new_message``, called once for each part it creates (its stack depth is the part's
    nesting), and ``_parse_headers``, called with each part's header lines. ``LimitExceeded``
    raised there leaves ``feed``/``close`` at once.
    """

    def __init__(self, budget: Budget, policy: Policy) -> None:
        super().__init__(policy=policy)
        self.budget = budget

    def _new_message(self) -> None:
        stack: list[Message] = self._msgstack  # type: ignore[attr-defined]
        self.budget.part(len(stack))
        super()._new_message()  # type: ignore[misc]

    def _parse_headers(self, lines: list[str]) -> Any:
        self.budget.headers(lines)
        return super()._parse_headers(lines)  # type: ignore[misc]
