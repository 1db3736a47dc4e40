"""The provisioning API at ``/_pontis/provision/v1`` on the bridge's HTTP port (DESIGN §4).

A sub-application of the appservice's aiohttp server with its own error handling (every answer
is JSON, :mod:`bridge.provision.errors`). Its contract is ``openapi.yaml`` next to this module,
served as ``openapi.json``; the tests check the implementation against it.
"""

from __future__ import annotations

import importlib.resources
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from functools import cache
from typing import TYPE_CHECKING, Any

from aiohttp import web
from ruamel.yaml import YAML

from bridge.core.adopt import RoomBridging
from bridge.core.audit import AuditLog
from bridge.core.clients import ClientRegistry
from bridge.core.config import ConfigError, ConfigProblem
from bridge.core.connector import NetworkConnector
from bridge.core.ids import NetworkID
from bridge.core.matrix import MatrixAPI
from bridge.core.permissions import Permissions
from bridge.core.portals import PortalManager
from bridge.portal.models import Login
from bridge.portal.store import Store
from bridge.provision.admin import DeadLetterEndpoints
from bridge.provision.auth import Authenticator
from bridge.provision.contacts import ContactEndpoints
from bridge.provision.errors import error_middleware
from bridge.provision.logins import LoginEndpoints
from bridge.provision.networks import NetworkEndpoints
from bridge.provision.parts import ApiParts
from bridge.provision.user import UserEndpoints

if TYPE_CHECKING:
    from bridge.core.app import App

PREFIX = "/_pontis/provision/v1"
_UNSET_SECRETS = ("", "generate", "disable")
MIN_SECRET_LENGTH = 16


@cache
def openapi_text() -> str:
    """The OpenAPI document as JSON text, read once from the package."""
    source = importlib.resources.files("bridge.provision").joinpath("openapi.yaml")
    document: Any = YAML(typ="safe").load(source.read_text(encoding="utf-8"))
    return json.dumps(document, indent=1)


async def _openapi(request: web.Request) -> web.Response:
    return web.Response(text=openapi_text(), content_type="application/json")


def build_app(
    *,
    auth: Authenticator,
    store: Store,
    matrix: MatrixAPI,
    portals: PortalManager,
    bridging: RoomBridging,
    clients: ClientRegistry,
    connectors: dict[NetworkID, NetworkConnector],
    permissions: Permissions,
    after_retry: Callable[[], Awaitable[None]],
    load_login: Callable[[Login], Awaitable[None]],
    log: logging.Logger,
    clock: Callable[[], float] = time.monotonic,
) -> web.Application:
    """The sub-application to mount at :data:`PREFIX`. ``load_login`` builds and connects the
    client of a login completed through the API, as for the management room."""
    app = web.Application(middlewares=[error_middleware(log)])
    app.router.add_get("/openapi.json", _openapi)
    audit = AuditLog(store)
    parts = ApiParts(
        auth=auth, store=store, matrix=matrix, portals=portals, bridging=bridging,
        clients=clients, connectors=connectors, permissions=permissions, audit=audit, log=log,
    )  # fmt: skip
    UserEndpoints(parts).add_routes(app)
    ContactEndpoints(parts).add_routes(app)
    NetworkEndpoints(parts).add_routes(app)
    LoginEndpoints(parts, load_login=load_login, clock=clock).add_routes(app)
    DeadLetterEndpoints(
        auth=auth, store=store, after_retry=after_retry, audit=audit, log=log
    ).add_routes(app)
    return app


def shared_secret(section: Mapping[str, Any]) -> str | None:
    """``provisioning.shared_secret``, or None where the template's placeholder is left."""
    secret = str(section.get("shared_secret") or "")
    if secret in _UNSET_SECRETS:
        return None
    if len(secret) < MIN_SECRET_LENGTH:
        raise ConfigError([ConfigProblem(
            "provisioning.shared_secret",
            f"shorter than {MIN_SECRET_LENGTH} characters; use a long random value "
            "(`openssl rand -hex 32`)",
        )])  # fmt: skip
    return secret


def install(app: web.Application, hub: App) -> None:
    """Mount the API on ``app`` if ``provisioning.enabled``; the hook of :class:`App`."""
    section = hub.config.section("provisioning")
    if not section.get("enabled"):
        return
    log = hub.log.getChild("provisioning")
    secret = shared_secret(section)
    if secret is None:
        log.info("provisioning.shared_secret is not set: only Matrix access tokens are accepted")
    router = hub.router

    async def after_retry() -> None:
        router.notify_inbox()
        await router.remote.poll()

    permissions = Permissions.from_config(hub.config)
    auth = Authenticator(
        shared_secret=secret,
        permissions=permissions,
        http=hub.http,
        homeserver_url=hub.config.homeserver_address,
        is_puppet=router.is_any_puppet,
        log=log,
        cache_seconds=float(section.get("token_cache_seconds", 60)),
    )
    app.add_subapp(PREFIX, build_app(
        auth=auth, store=hub.store, matrix=hub.matrix, portals=router.portals,
        bridging=router.bridging, clients=router.clients, connectors=hub.connectors,
        permissions=permissions, after_retry=after_retry, load_login=hub.load_login, log=log,
    ))  # fmt: skip
    log.info("Provisioning API at %s", PREFIX)
