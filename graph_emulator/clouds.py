"""The Microsoft clouds the emulator can stand in for, by the Graph each one's tokens are for.

Entra ID issues a token for one resource; a tenant of the US Government cloud asks for
``https://graph.microsoft.us/.default`` and gets ``aud: https://graph.microsoft.us``, which the
global Graph refuses (and vice versa). The emulator serves every cloud on one address, so it
keeps the pairing by tenant: a tenant's tokens are for its cloud's Graph, and only those pass.
"""

from __future__ import annotations

GRAPH_RESOURCES = {
    "global": "https://graph.microsoft.com",
    "usgov": "https://graph.microsoft.us",
    "usgovdod": "https://dod-graph.microsoft.us",
    "china": "https://microsoftgraph.chinacloudapi.cn",
}
"""Cloud → its Graph's resource identifier (a token's ``aud``)."""

LOOPBACK_RESOURCES = (
    "http://127.0.0.1",
    "http://localhost",
    "https://127.0.0.1",
    "https://localhost",
)
"""Resources named after the emulator's own address (kiota derives ``{host}/.default`` from the
request URL): accepted as the tenant's own Graph."""


def graph_resource(cloud: str) -> str:
    return GRAPH_RESOURCES.get(cloud, GRAPH_RESOURCES["global"])


def scope_resource(scope: str) -> str | None:
    """``https://graph.microsoft.us/.default`` → ``https://graph.microsoft.us``; a scope without
    a resource (``Chat.Read``: Graph's, by Entra ID's default) → None."""
    if "://" not in scope:
        return None
    return scope.rsplit("/", 1)[0].rstrip("/").lower()


def is_own_graph(resource: str, cloud: str) -> bool:
    """Whether ``resource`` names the Graph of ``cloud`` (or the emulator itself)."""
    if resource == graph_resource(cloud):
        return True
    host = resource.split("://", 1)[-1].split("/", 1)[0]
    return any(resource.startswith(r) for r in LOOPBACK_RESOURCES) and host.split(":")[0] in {
        "127.0.0.1",
        "localhost",
    }
