"""Errors of the provisioning API as JSON ``{"errcode", "error"}``, the way Matrix and mautrix's
provisioning APIs answer, and the reading of request bodies within a size limit.

Nothing a client sends can make the API answer 500: every handler raises :class:`ApiError` for
what it refuses, and the middleware turns aiohttp's own answers (unknown path, wrong method) and
anything unexpected into the same JSON shape.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

MAX_BODY_BYTES = 64 * 1024
"""Largest request body accepted; a provisioning request is a few hundred bytes."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """A refusal: HTTP ``status`` with ``errcode`` and a sentence for people in ``error``."""

    def __init__(self, status: int, errcode: str, error: str) -> None:
        super().__init__(error)
        self.status = status
        self.errcode = errcode
        self.error = error


def bad_request(error: str, errcode: str = "M_BAD_JSON") -> ApiError:
    return ApiError(400, errcode, error)


def forbidden(error: str) -> ApiError:
    return ApiError(403, "M_FORBIDDEN", error)


def not_found(error: str) -> ApiError:
    return ApiError(404, "M_NOT_FOUND", error)


def conflict(error: str) -> ApiError:
    return ApiError(409, "FI.PONTIS.CONFLICT", error)


def json_error(status: int, errcode: str, error: str, **headers: str) -> web.Response:
    return web.json_response({"errcode": errcode, "error": error}, status=status, headers=headers)


_AIOHTTP_ERRCODES = {
    404: ("M_UNRECOGNIZED", "No such provisioning endpoint."),
    405: ("M_UNRECOGNIZED", "This endpoint does not take that method."),
    413: ("M_TOO_LARGE", f"The request body is larger than {MAX_BODY_BYTES} bytes."),
}


def error_middleware(log: logging.Logger) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as err:
            headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else {}
            return json_error(err.status, err.errcode, err.error, **headers)
        except web.HTTPException as err:
            errcode, error = _AIOHTTP_ERRCODES.get(err.status, ("M_UNKNOWN", err.reason))
            return json_error(err.status, errcode, error)
        except Exception:
            log.exception("Provisioning request %s %s failed", request.method, request.path)
            return json_error(500, "M_UNKNOWN", "Internal error; the bridge's log says more.")

    return middleware


async def read_json(request: web.Request, limit: int = MAX_BODY_BYTES) -> dict[str, Any]:
    """The body as a JSON object, refusing more than ``limit`` bytes before reading them all."""
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "M_TOO_LARGE", f"The request body is larger than {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(limit + 1 - size):  # chunked bodies too
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "M_TOO_LARGE", f"The request body is larger than {limit} bytes.")
    raw = b"".join(chunks)
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise bad_request("The request body is not valid JSON.", "M_NOT_JSON") from None
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    return body


def string_field(body: dict[str, Any], key: str, *, max_length: int = 1000) -> str:
    """A required non-empty string field of ``body``."""
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise bad_request(f"`{key}` must be a non-empty string.", "M_INVALID_PARAM")
    return text(value, key, max_length=max_length)


def text(value: str, name: str, *, max_length: int = 1000) -> str:
    """``value`` if a database can store it: not too long, no NUL, valid Unicode."""
    if len(value) > max_length:
        raise bad_request(f"`{name}` is longer than {max_length} characters.", "M_INVALID_PARAM")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise bad_request(f"`{name}` is not valid Unicode.", "M_INVALID_PARAM") from None
    if "\x00" in value:
        raise bad_request(f"`{name}` contains a NUL character.", "M_INVALID_PARAM")
    return value
