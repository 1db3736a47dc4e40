"""Certificate credentials: the client assertion an app signs instead of sending its secret.

The documented shape (Microsoft identity platform, "certificate credentials"):
``client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`` and
``client_assertion=<JWT>``, whose header names the certificate by its thumbprint (``x5t``:
base64url SHA-1, or ``x5t#S256``: base64url SHA-256) and an ``alg`` of RS256 or PS256, and
whose claims are ``aud`` (the token endpoint), ``iss`` = ``sub`` = the client id, ``jti``,
``exp`` (``nbf`` and ``iat`` optional; MSAL sends ``iat``). The emulator checks all of that against the certificates registered on the
app, with the certificate's public key, as Entra ID does; a certificate past its validity is
refused even if the signature is right.

Times are checked against the real clock, not the emulated one: the assertion is made by the
client's clock, and tests that advance the emulator's clock to expire tokens would otherwise
find every fresh assertion "expired".
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ALGORITHMS = ("RS256", "PS256")
# Entra ID accepts a few minutes of clock skew.
LEEWAY_SECONDS = 300


class AssertionRefused(Exception):
    """Why the assertion does not prove the client: an AADSTS code and its description."""

    def __init__(self, aadsts: int, description: str) -> None:
        super().__init__(f"AADSTS{aadsts}: {description}")
        self.aadsts = aadsts
        self.description = description


def load_certificate(pem: str) -> x509.Certificate:
    """A PEM certificate; ValueError if it is not one."""
    return x509.load_pem_x509_certificate(pem.encode())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _thumbprint(header: dict[str, object], key: str) -> str:
    """A thumbprint header as unpadded base64url (MSAL pads it, the RFC does not)."""
    return str(header.get(key) or "").rstrip("=").replace("+", "-").replace("/", "_")


def _find(header: dict[str, object], certificates: list[str]) -> x509.Certificate | None:
    sha256, sha1 = _thumbprint(header, "x5t#S256"), _thumbprint(header, "x5t")
    for pem in certificates:
        cert = load_certificate(pem)
        if sha256 and sha256 == _b64(cert.fingerprint(hashes.SHA256())):
            return cert
        if sha1 and sha1 == _b64(
            cert.fingerprint(hashes.SHA1())
        ):  # SHA-1 thumbprints: as Entra ID accepts them
            return cert
    return None


def verify(assertion: str, client_id: str, certificates: list[str], audiences: set[str]) -> None:
    """Accept ``assertion`` as proof that it comes from ``client_id``, or raise
    :class:`AssertionRefused`. ``audiences``: the token endpoint's URLs it may be made for."""
    try:
        header = jwt.get_unverified_header(assertion)
    except jwt.PyJWTError as err:
        raise AssertionRefused(50027, f"JWT token is invalid or malformed ({err}).") from err
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise AssertionRefused(
            5002738, f"Invalid JWT token. '{alg}' is not a supported signature algorithm."
        )
    cert = _find(header, certificates)
    thumb = header.get("x5t#S256") or header.get("x5t")
    if cert is None:
        raise AssertionRefused(
            700027,
            "Client assertion failed signature validation. Reason - The key was not found., "
            f"Thumbprint of key used by client: '{thumb}'",
        )
    now = datetime.now(UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise AssertionRefused(
            700027,
            "Client assertion contains an invalid signature. Reason - The key used is expired., "
            f"Thumbprint of key used by client: '{thumb}'",
        )
    try:
        claims = jwt.decode(
            assertion,
            cert.public_key(),  # type: ignore[arg-type]
            algorithms=[str(alg)],
            audience=sorted(audiences),
            issuer=client_id,
            leeway=LEEWAY_SECONDS,
            options={"require": ["exp", "aud", "iss", "sub", "jti"]},
        )
    except jwt.InvalidSignatureError as err:
        raise AssertionRefused(700027, "Client assertion failed signature validation.") from err
    except (jwt.ExpiredSignatureError, jwt.ImmatureSignatureError) as err:
        raise AssertionRefused(
            700024, "Client assertion is not within its valid time range."
        ) from err
    except jwt.InvalidAudienceError as err:
        raise AssertionRefused(
            700212, "The assertion audience does not match this token endpoint."
        ) from err
    except jwt.PyJWTError as err:
        raise AssertionRefused(50027, f"Invalid JWT token ({err}).") from err
    if claims.get("sub") != client_id:
        raise AssertionRefused(
            700021, "Client assertion application identifier doesn't match 'client_id' parameter."
        )
