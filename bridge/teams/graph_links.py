"""Links Graph gives (``@odata.nextLink``, ``@odata.deltaLink``) are followed with the tenant's
token: only those on the tenant's own Graph endpoint are."""

from __future__ import annotations

from urllib.parse import urlsplit


def on_graph(url: str, graph_url: str) -> bool:
    """Whether ``url`` is on the tenant's Graph endpoint (scheme, host, port and path)."""
    try:
        got, graph = urlsplit(url), urlsplit(graph_url)
        return (
            got.scheme == graph.scheme
            and not got.username
            and not got.password
            and (got.hostname, got.port) == (graph.hostname, graph.port)
            and got.path.startswith(graph.path.rstrip("/") + "/")
        )
    except ValueError:
        return False
