"""A test CA, certificates it or nobody signed, and the emulator served over https as well.

MSAL accepts only an https authority, so tests that sign in through MSAL reach the emulator's
identity platform over https (a certificate for 127.0.0.1 from a CA made here, trusted through
MSAL's ``verify``), while Graph stays on plain http on another port of the same application.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class TestCA:
    __test__ = False  # not a test class, whatever its name

    key: rsa.RSAPrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls) -> TestCA:
        key = _key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Pontis test CA")])
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    def write_bundle(self, path: Path) -> Path:
        path.write_bytes(_pem_cert(self.cert))
        return path

    def server_context(self, directory: Path) -> ssl.SSLContext:
        """A server certificate for 127.0.0.1 and localhost, signed by this CA."""
        key = _key()
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                        x509.DNSName("localhost"),
                    ]
                ),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        (directory / "server.pem").write_bytes(_pem_cert(cert))
        (directory / "server.key").write_bytes(_pem_key(key))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(directory / "server.pem", directory / "server.key")
        return context


def app_certificate(path: Path, *, expired: bool = False) -> str:
    """A self-signed certificate for an app registration, written with its private key to
    ``path`` (one PEM file, as the bridge's ``certificate_file`` reads); returns the
    certificate's PEM for the emulator's app."""
    key = _key()
    now = datetime.now(UTC)
    start, end = (
        (now - timedelta(days=30), now - timedelta(days=1))
        if expired
        else (now - timedelta(hours=1), now + timedelta(days=365))
    )
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Pontis bridge")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .sign(key, hashes.SHA256())
    )
    pem = _pem_cert(cert)
    path.write_bytes(_pem_key(key) + pem)
    return pem.decode()


async def serve_https_too(
    app: web.Application, context: ssl.SSLContext
) -> tuple[web.AppRunner, str, str]:
    """Serve ``app`` on two loopback ports: http (Graph) and https (the identity platform).
    Returns the runner and both base URLs."""
    runner = web.AppRunner(app)
    await runner.setup()
    plain = web.TCPSite(runner, "127.0.0.1", 0)
    secure = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await plain.start()
    await secure.start()
    return runner, f"http://127.0.0.1:{_port(plain)}", f"https://127.0.0.1:{_port(secure)}"


async def add_https_site(runner: web.BaseRunner, context: ssl.SSLContext) -> str:
    """Serve an already running app (e.g. a TestServer's) on one more, https, loopback port;
    returns its base URL."""
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    return f"https://127.0.0.1:{_port(site)}"


def _port(site: web.TCPSite) -> int:
    """The port a started site bound (it was given 0). aiohttp keeps the socket in ``_server``,
    annotated as an AbstractServer, which has no ``sockets``; asyncio's loop makes a Server.
    (Only recent aiohttp, newer than the 3.9 this project allows, says it as ``site.port``.)"""
    server = site._server
    assert isinstance(server, asyncio.Server)
    return int(server.sockets[0].getsockname()[1])
