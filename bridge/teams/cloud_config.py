"""Which Microsoft cloud a tenant is in, and how its app proves itself: the values of a
tenant's ``cloud``, ``authority_host``, ``graph_endpoint``, ``client_secret`` and
``certificate_file``, resolved and checked.

A national cloud has its own sign-in authority and its own Graph, and a token is for one
Graph only (its ``aud``): a US Government tenant must ask for
``https://graph.microsoft.us/.default`` at ``login.microsoftonline.us`` and call
``graph.microsoft.us``. Asking the global authority for the global Graph fails there, which is
why the cloud is one setting rather than three URLs that must agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from cryptography import x509


@dataclass(frozen=True, slots=True)
class Cloud:
    authority_host: str
    graph: str
    """The Graph's origin, which is also the tokens' resource (``aud``)."""


CLOUDS = {
    "global": Cloud("https://login.microsoftonline.com", "https://graph.microsoft.com"),
    "usgov": Cloud("https://login.microsoftonline.us", "https://graph.microsoft.us"),
    "usgovdod": Cloud("https://login.microsoftonline.us", "https://dod-graph.microsoft.us"),
    "china": Cloud("https://login.chinacloudapi.cn", "https://microsoftgraph.chinacloudapi.cn"),
}
"""Microsoft's national cloud deployments (learn.microsoft.com, "National cloud
deployments"): where each signs in and its Graph."""


@dataclass(frozen=True, slots=True)
class Endpoints:
    authority_host: str
    graph_url: str
    """Where Graph requests go (``…/v1.0``)."""
    graph_resource: str
    """What the tokens are for."""


def origin(url: str) -> str:
    parsed = urlparse(url)
    return f"{parsed.scheme}://{parsed.netloc}"


def endpoints(
    cloud: str, authority_host: str, graph_endpoint: str, default_authority: str, default_graph: str
) -> Endpoints:
    """A tenant's endpoints. ``cloud`` names the audience; ``authority_host`` and
    ``graph_endpoint`` say where to connect (a national cloud's own by default; an emulator or
    a proxy when given). Without either, the section's ``authority`` and ``graph_url``."""
    known = CLOUDS.get(cloud or "global", CLOUDS["global"])
    if cloud and cloud != "global":
        host = authority_host or known.authority_host
        graph = graph_endpoint or f"{known.graph}/v1.0"
        return Endpoints(host, graph, known.graph)
    host = authority_host or default_authority
    graph = graph_endpoint or default_graph
    # The global cloud's Graph, unless an explicit endpoint names another (a sovereign
    # deployment not in CLOUDS): then its own origin is the resource.
    resource = origin(graph_endpoint) if graph_endpoint and not cloud else known.graph
    return Endpoints(host, graph, resource)


def credential_problems(where: str, entry: dict[str, Any]) -> list[str]:
    """What is wrong with a tenant entry's cloud and credential, one line each."""
    problems = []
    cloud = str(entry.get("cloud") or "").strip().lower()
    if cloud and cloud not in CLOUDS:
        problems.append(f"{where}.cloud: one of {', '.join(CLOUDS)}")
    for key in ("authority_host", "graph_endpoint"):
        value = str(entry.get(key) or "")
        if value and (
            urlparse(value).scheme not in ("http", "https") or not urlparse(value).hostname
        ):
            problems.append(f"{where}.{key}: expected an http(s) URL")
    host = str(entry.get("authority_host") or "")
    if host and urlparse(host).scheme != "https":
        problems.append(f"{where}.authority_host: must be https (MSAL refuses anything else)")
    secret = str(entry.get("client_secret") or "").strip()
    cert = str(entry.get("certificate_file") or "").strip()
    if bool(secret) == bool(cert):
        problems.append(f"{where}: give client_secret or certificate_file (one of them)")
    if cert:
        problems += certificate_problems(f"{where}.certificate_file", cert)
    return problems


def certificate_problems(where: str, path: str, now: datetime | None = None) -> list[str]:
    """A certificate file that cannot be read, has no certificate, or is not valid now
    (Entra ID refuses an expired one: better said at start than at the first token)."""
    if Path(path).suffix.lower() in (".pfx", ".p12"):
        return [] if Path(path).is_file() else [f"{where}: no file {path}"]
    try:
        pem = Path(path).read_bytes()
    except OSError as err:
        return [f"{where}: cannot read {path} ({err.strerror})"]
    if b"PRIVATE KEY-----" not in pem:
        return [f"{where}: {path} holds no private key (PEM with the key and the certificate)"]
    try:
        cert = x509.load_pem_x509_certificate(pem[pem.index(b"-----BEGIN CERTIFICATE-----") :])
    except ValueError:
        return [f"{where}: {path} holds no PEM certificate"]
    now = now or datetime.now(UTC)
    if cert.not_valid_after_utc < now:
        return [f"{where}: the certificate expired on {cert.not_valid_after_utc:%Y-%m-%d}"]
    if cert.not_valid_before_utc > now:
        return [f"{where}: the certificate is valid only from {cert.not_valid_before_utc:%Y-%m-%d}"]
    return []
