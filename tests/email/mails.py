"""Sample mails for the protocol tests: files in ``data/`` and small ones built inline."""

from __future__ import annotations

import textwrap
from pathlib import Path

DATA = Path(__file__).parent / "data"


def load(name: str) -> bytes:
    """A sample mail from ``data/`` as an MTA hands it over: CRLF line ends."""
    return (DATA / name).read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def samples() -> list[bytes]:
    return [load(path.name) for path in sorted(DATA.glob("*.eml"))]


def raw(text: str) -> bytes:
    """A mail written as an indented block with LF line ends, made into wire format."""
    return textwrap.dedent(text).lstrip("\n").replace("\n", "\r\n").encode("utf-8")


def simple(
    headers: str = "", body: str = "Hello", *, sender: str = "From: bob@example.org"
) -> bytes:
    """A one-part mail from ``sender`` to a portal, with extra ``headers`` lines."""
    head = "\n".join(h for h in (sender, "To: room.abcdefghijklmnop@bridge.example", headers) if h)
    return raw(f"{head}\n\n{body}\n")
