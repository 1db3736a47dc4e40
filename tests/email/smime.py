"""S/MIME test mails, signed with the test-only certificates in ``data/smime`` by ``openssl``."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

SMIME = Path(__file__).parent / "data" / "smime"
CA = SMIME / "ca.pem"


def signed_mail(
    body: str,
    *,
    signer: str = "signer",
    sender: str = "Sam <sam@agency.test>",
    to: str = "room@hub-mail.test",
    subject: str = "Signed",
    headers: str = "",
) -> bytes:
    """A ``multipart/signed`` mail whose text/plain ``body`` is signed by ``signer`` (the name
    of a ``.pem``/``.key`` pair in data/smime), CRLF line ends as an MTA delivers it."""
    inner = f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n".encode()
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp, "inner")
        source.write_bytes(inner)
        out = subprocess.run(
            ["openssl", "smime", "-sign", "-in", str(source),
             "-signer", str(SMIME / f"{signer}.pem"), "-inkey", str(SMIME / f"{signer}.key"),
             "-from", sender, "-to", to, "-subject", subject],
            capture_output=True, check=True, timeout=30,
        ).stdout  # fmt: skip
    head = "".join(f"{line}\r\n" for line in headers.splitlines() if line)
    return head.encode() + out.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
