"""Composition: one aiohttp application serving the identity platform, Graph v1.0 and the
control API, with the request log and fault injection in front of all of them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from . import control, graph_chats, graph_drive, graph_teams, graph_users, subscriptions
from .config import EmulatorConfig
from .odata import GraphError, error_response, request_id
from .recording import RECORDING, Recording
from .services import SERVICES, Services

log = logging.getLogger(__name__)


@web.middleware
async def graph_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Graph's error body for every failure under /v1.0, and its tracing headers."""
    if not request.path.startswith("/v1.0"):
        response: web.StreamResponse = await handler(request)
        return response
    try:
        response = await handler(request)
    except GraphError as exc:
        response = error_response(request, exc)
    except web.HTTPNotFound:
        segment = request.path.rstrip("/").rsplit("/", 1)[-1]
        response = error_response(
            request,
            GraphError(400, "BadRequest", f"Resource not found for the segment '{segment}'."),
        )
    except web.HTTPMethodNotAllowed as exc:
        error = GraphError(
            405,
            "BadRequest",
            f"The HTTP method '{request.method}' is not allowed for this resource.",
            headers={"Allow": ", ".join(sorted(exc.allowed_methods))},
        )
        response = error_response(request, error)
    response.headers["request-id"] = request_id(request)
    response.headers["client-request-id"] = request.headers.get(
        "client-request-id", request_id(request)
    )
    response.headers["x-ms-ags-diagnostic"] = (
        '{"ServerInfo":{"DataCenter":"Pontis Emulator","Slice":"E","Ring":"0"}}'
    )
    return response


async def _sweep_forever(svc: Services) -> None:
    while True:
        await asyncio.sleep(svc.config.sweep_interval)
        for sub in svc.state.sweep():
            log.info("Subscription %s on %s expired", sub.id, sub.resource)


def create_app(
    config: EmulatorConfig | None = None, seed_document: dict[str, Any] | None = None
) -> web.Application:
    """The emulator as an aiohttp app; ``seed_document`` is applied once it starts."""
    svc = Services.build(config or EmulatorConfig())
    recording = Recording()
    app = web.Application(
        middlewares=[
            recording.middleware,
            svc.wire.middleware,
            control.control_errors,
            graph_errors,
        ],
        # File uploads: a simple upload up to 4 MiB, an upload session's chunks up to 60 MiB.
        client_max_size=64 * 1024 * 1024,
    )
    app[SERVICES] = svc
    app[RECORDING] = recording

    identity = svc.identity
    app.router.add_post("/{tenant}/oauth2/v2.0/token", identity.token)
    app.router.add_post("/{tenant}/oauth2/v2.0/devicecode", identity.devicecode)
    app.router.add_get(
        "/{tenant}/v2.0/.well-known/openid-configuration", identity.openid_configuration
    )
    app.router.add_get("/{tenant}/discovery/v2.0/keys", identity.keys)
    graph_chats.add_routes(app)
    graph_users.add_routes(app)
    graph_teams.add_routes(app)
    graph_drive.add_routes(app)
    subscriptions.add_routes(app)
    control.add_routes(app)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await svc.notifier.start()
        sweeper = asyncio.get_running_loop().create_task(_sweep_forever(svc))
        if seed_document is not None:
            from . import seed

            base = (svc.config.public_url or "http://localhost").rstrip("/") + "/v1.0"
            seed.apply(svc, seed_document, base)
        yield
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
        await svc.notifier.stop()

    app.cleanup_ctx.append(lifecycle)
    return app
