"""A Microsoft Graph emulator: the identity platform, the Teams part of Graph v1.0 and change
notifications, on one aiohttp server, for end-to-end tests and demos of the Teams connector.

The unmodified msgraph-sdk talks to it through a base URL (see ``bridge.teams.protocol``
and docs/graph-emulator.md). It is a separate program: the bridge never imports it.
"""

from .app import create_app
from .config import EmulatorConfig

__all__ = ["EmulatorConfig", "create_app"]
