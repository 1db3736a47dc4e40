"""Microsoft identity platform and Graph helpers. Imports nothing from the bridge."""

from .graph import graph_client, preload_models
from .oauth import OAuthTokenProvider, TokenError, poll_device_code, start_device_code

__all__ = [
    "OAuthTokenProvider",
    "TokenError",
    "graph_client",
    "poll_device_code",
    "preload_models",
    "start_device_code",
]
