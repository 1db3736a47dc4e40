"""Signed and encrypted mail (S/MIME, OpenPGP): what it is, and whether a signature holds.

A reader must never be shown a signed mail as an ordinary one with a stray ``smime.p7s``, nor an
encrypted one as an empty message with a ``.asc`` file: the first hides that the sender proved
who they are (or that the proof failed), the second hides that there is a message at all.

- S/MIME ``multipart/signed`` (``application/pkcs7-signature``) is verified with the
  ``openssl cms`` command (OpenSSL is on every host the bridge runs on, and Python's
  ``cryptography`` cannot verify PKCS #7): *valid* (signature matches and the signer's
  certificate chains to a trust anchor), *untrusted* (matches, but the certificate does not
  chain to one), *invalid* (does not match: the mail was changed, or the signature is bogus).
  The signer's certificate subject is read with ``cryptography``.
- OpenPGP ``multipart/signed`` (``application/pgp-signature``) and inline ``BEGIN PGP SIGNED
  MESSAGE``: signed, *unchecked* (the bridge holds no one's public keys).
- ``multipart/encrypted`` (OpenPGP), ``application/pkcs7-mime`` (S/MIME encrypted or opaque
  signed) and inline ``BEGIN PGP MESSAGE``: encrypted; the bridge cannot read it.

Runs in the parse worker (``openssl`` is a blocking subprocess, bounded by a timeout).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography import x509

OPENSSL = "openssl"
OPENSSL_TIMEOUT = 10.0
MAX_SUBJECT_CHARS = 300

_SMIME_SIGNATURES = frozenset({"application/pkcs7-signature", "application/x-pkcs7-signature"})
_PGP_SIGNATURE = "application/pgp-signature"
_SMIME_OPAQUE = frozenset({"application/pkcs7-mime", "application/x-pkcs7-mime"})


@dataclass(slots=True)
class Security:
    """How a mail is protected. ``status`` is for signatures: ``valid``, ``untrusted``,
    ``invalid`` or ``unchecked``; ``signer`` is the signing certificate's subject (S/MIME)."""

    kind: str  # "smime" or "openpgp"
    signed: bool = False
    encrypted: bool = False
    status: str = "unchecked"
    signer: str = ""
    signer_emails: tuple[str, ...] = ()
    detail: str = ""


def is_signature_part(part: Message) -> bool:
    """Whether ``part`` is a detached signature (shown as the status, not as a file)."""
    return part.get_content_type() in _SMIME_SIGNATURES | {_PGP_SIGNATURE}


def read_security(
    msg: Message, raw: bytes, trust_anchors: str | None, *, text: str | None = None
) -> Security | None:
    """The protection of the mail whose root part is ``msg`` (``raw``: its bytes as received),
    or None. With ``text`` (the plain body), inline OpenPGP is looked for as well."""
    content_type = msg.get_content_type()
    protocol = str(msg.get_param("protocol") or "").strip().lower()
    if content_type == "multipart/encrypted":
        kind = "openpgp" if protocol == "application/pgp-encrypted" else "smime"
        return Security(kind=kind, encrypted=True)
    if content_type in _SMIME_OPAQUE:
        smime_type = str(msg.get_param("smime-type") or "").strip().lower()
        # Opaque signed-data holds the content inside the signature: as unreadable here as
        # encrypted mail, so it is handed over whole too.
        return Security(kind="smime", encrypted=True, signed=smime_type == "signed-data")
    if content_type == "multipart/signed":
        if protocol in _SMIME_SIGNATURES:
            return verify_smime(raw, trust_anchors)
        if protocol == _PGP_SIGNATURE:
            return Security(kind="openpgp", signed=True)
    if text is not None:
        head = text.lstrip()[:64]
        if head.startswith("-----BEGIN PGP MESSAGE-----"):
            return Security(kind="openpgp", encrypted=True)
        if head.startswith("-----BEGIN PGP SIGNED MESSAGE-----"):
            return Security(kind="openpgp", signed=True)
    return None


def _openssl(args: list[str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [OPENSSL, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=OPENSSL_TIMEOUT,
        check=False,
    )


def verify_smime(raw: bytes, trust_anchors: str | None) -> Security:
    """Check an S/MIME ``multipart/signed`` mail with ``openssl cms -verify``."""
    result = Security(kind="smime", signed=True)
    with tempfile.TemporaryDirectory(prefix="pontis-smime-") as tmp:
        mail, signer = Path(tmp, "mail.eml"), Path(tmp, "signer.pem")
        mail.write_bytes(raw)
        common = ["cms", "-verify", "-inform", "SMIME", "-in", str(mail), "-out", os.devnull]
        common += ["-signer", str(signer), "-purpose", "any"]
        anchors = ["-CAfile", trust_anchors] if trust_anchors else []
        try:
            checked = _openssl([*common, *anchors])
            if checked.returncode == 0:
                result.status = "valid"
            elif _openssl([*common, "-noverify"]).returncode == 0:
                result.status = "untrusted"
                result.detail = _first_error(checked.stderr)
            else:
                result.status = "invalid"
                result.detail = _first_error(checked.stderr)
        except (OSError, subprocess.TimeoutExpired) as err:
            result.detail = f"the signature could not be checked: {type(err).__name__}"
            return result
        if signer.exists():
            result.signer, result.signer_emails = _subject(signer.read_bytes())
    return result


def _first_error(stderr: bytes) -> str:
    for line in stderr.decode("utf-8", "replace").splitlines():
        if "error" in line.lower() or "fail" in line.lower():
            return line.strip()[:200]
    return ""


def _subject(pem: bytes) -> tuple[str, tuple[str, ...]]:
    """(the subject of the first certificate in ``pem``, its e-mail addresses)."""
    from cryptography import x509  # only S/MIME mail needs it

    try:
        cert = x509.load_pem_x509_certificates(pem)[0]
    except (ValueError, IndexError):
        return "", ()
    emails: list[str] = []
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        emails = [str(e).lower() for e in names.value.get_values_for_type(x509.RFC822Name)]
    except x509.ExtensionNotFound:
        pass
    emails += [
        str(a.value).lower()
        for a in cert.subject.get_attributes_for_oid(x509.NameOID.EMAIL_ADDRESS)
        if str(a.value).lower() not in emails
    ]
    return _readable(cert.subject)[:MAX_SUBJECT_CHARS], tuple(emails)


def _readable(subject: x509.Name) -> str:
    """``Sam Signer, Agency Test`` (common name, organisation) or the RFC 4514 form."""
    from cryptography.x509.oid import NameOID

    parts = [
        str(attribute.value)
        for oid in (NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME)
        for attribute in subject.get_attributes_for_oid(oid)
    ]
    return ", ".join(parts) if parts else subject.rfc4514_string()
