"""Graph's wire conventions: timestamps, ids, error bodies, OData annotations and paging.

Everything here is shared by the identity platform, the Graph routes and the notifier, so the
emulator answers in one voice. The formats follow what Graph really sends, because the point of
the emulator is that the unmodified msgraph-sdk and the bridge cannot tell the difference.
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import json
import secrets
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

from aiohttp import web

_Item = TypeVar("_Item")

# Graph answers JSON with OData's full media type; kiota strips the parameters before it picks
# a parser, so sending the real header checks that path too.
GRAPH_JSON = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"

# What Graph puts in WWW-Authenticate on a 401 (the resource is Graph's well-known app id).
WWW_AUTHENTICATE = (
    'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", '
    'client_id="00000003-0000-0000-c000-000000000000"'
)


def iso(moment: datetime | None) -> str | None:
    """Graph's timestamp form: UTC, millisecond precision, a literal ``Z``."""
    if moment is None:
        return None
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


def parse_iso(value: object) -> datetime | None:
    """Parse an ISO 8601 timestamp as clients send it; naive values are taken as UTC."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    # Python 3.11 accepts at most 6 fractional digits; .NET clients send 7.
    if "." in text:
        head, _, rest = text.partition(".")
        digits = "".join(ch for ch in rest if ch.isdigit())
        tail = rest[len(digits) :]
        text = f"{head}.{digits[:6]}{tail}"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def new_guid() -> str:
    """Entra object ids: lowercase uuid4 strings."""
    return str(uuid.uuid4())


def new_thread_hex() -> str:
    return secrets.token_hex(16)


class GraphError(Exception):
    """An error Graph would answer with; the middleware renders it in Graph's error format."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def not_found(message: str) -> GraphError:
    return GraphError(404, "NotFound", message)


def bad_request(message: str, code: str = "BadRequest") -> GraphError:
    return GraphError(400, code, message)


def forbidden(message: str) -> GraphError:
    return GraphError(403, "Forbidden", message)


def error_body(request: web.Request, code: str, message: str) -> dict[str, Any]:
    """``{"error": {code, message, innerError}}`` with the ids Graph support would ask for."""
    return {
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                "request-id": request_id(request),
                "client-request-id": request.headers.get("client-request-id", request_id(request)),
            },
        }
    }


_REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "graph_request_id", default=None
)


def start_request() -> None:
    """Give the request about to be handled a fresh id (keep-alive connections reuse a task)."""
    _REQUEST_ID.set(new_guid())


def request_id(request: web.Request) -> str:
    """One id per request, reused in headers and error bodies (aiohttp runs each request in
    its own task, so a context variable holds it)."""
    value = _REQUEST_ID.get()
    if value is None:
        value = new_guid()
        _REQUEST_ID.set(value)
    return value


def error_response(request: web.Request, error: GraphError) -> web.Response:
    return web.Response(
        status=error.status,
        body=json.dumps(error_body(request, error.code, error.message)),
        content_type="application/json",
        headers=error.headers,
    )


def json_response(data: object, status: int = 200) -> web.Response:
    response = web.Response(status=status, body=json.dumps(data, ensure_ascii=False))
    response.headers["Content-Type"] = GRAPH_JSON
    return response


def origin(request: web.Request, public_url: str | None = None) -> str:
    """Where clients reach the emulator; nextLinks and content URLs are built on it."""
    if public_url:
        return public_url.rstrip("/")
    return f"{request.scheme}://{request.host}"


def odata_key(value: str) -> str:
    """An id inside an OData key segment: ``chats('19:…')`` (quotes doubled, as OData does)."""
    return "'" + value.replace("'", "''") + "'"


def context_url(request: web.Request, public_url: str | None, fragment: str) -> str:
    return f"{origin(request, public_url)}/v1.0/$metadata#{fragment}"


def encode_skiptoken(state: dict[str, Any]) -> str:
    raw = json.dumps(state, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_skiptoken(token: str) -> dict[str, Any]:
    """Paging state carried in ``$skiptoken``; a mangled token is the client's error (400)."""
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, binascii.Error) as exc:
        raise bad_request("The $skiptoken is not valid.") from exc
    if not isinstance(data, dict):
        raise bad_request("The $skiptoken is not valid.")
    return data


def top_param(request: web.Request, default: int, maximum: int) -> int:
    """``$top`` as Graph validates it: a positive integer no larger than the page maximum."""
    raw = request.query.get("$top")
    if raw is None:
        return default
    try:
        top = int(raw)
    except ValueError as exc:
        raise bad_request(f"Invalid value '{raw}' for $top.") from exc
    if top < 1 or top > maximum:
        raise bad_request(f"Invalid page size requested. $top must be between 1 and {maximum}.")
    return top


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object, or Graph's 400 for anything else."""
    text = await request.text()
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise bad_request(
            "Unable to read JSON request payload. Please ensure Content-Type header is set "
            "and payload is of valid JSON format."
        ) from exc
    if not isinstance(data, dict):
        raise bad_request("The request body must be a JSON object.")
    return data


def page_of(
    request: web.Request,
    items: list[_Item],
    key: Callable[[_Item], tuple[int, int]],
    *,
    default: int,
    maximum: int,
) -> tuple[list[_Item], str | None]:
    """One page of ``items`` (already sorted newest first by ``key``) and the ``$skiptoken`` of
    the next one. The token holds the last key served, so new items arriving between pages
    neither repeat nor hide older ones."""
    top = top_param(request, default, maximum)
    token = request.query.get("$skiptoken")
    if token is not None:
        after = decode_skiptoken(token).get("after")
        if not (isinstance(after, list) and len(after) == 2):
            raise bad_request("The $skiptoken is not valid.")
        bound = (int(after[0]), int(after[1]))
        items = [item for item in items if key(item) < bound]
    page = items[:top]
    if len(items) > top:
        return page, encode_skiptoken({"after": list(key(page[-1]))})
    return page, None


def collection(
    request: web.Request,
    public_url: str | None,
    context: str,
    values: list[dict[str, Any]],
    skiptoken: str | None = None,
) -> web.Response:
    """A collection response: ``@odata.context``, ``value`` and, if more, ``@odata.nextLink``."""
    body: dict[str, Any] = {"@odata.context": context_url(request, public_url, context)}
    if skiptoken is not None:
        params = {k: v for k, v in request.query.items() if k != "$skiptoken"}
        params["$skiptoken"] = skiptoken
        query = urlencode(params, quote_via=quote, safe="$:,'()")
        body["@odata.nextLink"] = f"{origin(request, public_url)}{request.rel_url.raw_path}?{query}"
    body["value"] = values
    return json_response(body)


def entity(
    request: web.Request,
    public_url: str | None,
    context: str,
    data: dict[str, Any],
    status: int = 200,
) -> web.Response:
    return json_response(
        {"@odata.context": context_url(request, public_url, context), **data}, status
    )
