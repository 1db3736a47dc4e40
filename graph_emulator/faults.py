"""Everything a test wants to do to the wire: see each request, and make some of them fail.

The request log records every request outside ``/_emulator/`` (method, path, query, headers,
body, answer), so a test can assert "the SDK retried once" or "the bridge never sent X". A
fault makes the next N requests matching a method and path glob answer 429 with Retry-After,
503, or any other status, in Graph's error format.
"""

from __future__ import annotations

import asyncio
import fnmatch
import itertools
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .odata import error_body, iso, start_request
from .state import EmulatorState

_REDACTED_HEADERS = frozenset({"authorization"})
_MAX_LOGGED_BODY = 64 * 1024

_CODES = {
    429: (
        "TooManyRequests",
        "Too many requests. Please retry after the time in the Retry-After header.",
    ),
    500: ("InternalServerError", "An internal server error occurred (injected fault)."),
    502: ("BadGateway", "Bad gateway (injected fault)."),
    503: ("ServiceNotAvailable", "The service is temporarily unavailable. Please retry later."),
    504: ("GatewayTimeout", "Gateway timeout (injected fault)."),
}


@dataclass(slots=True)
class Fault:
    id: int
    path: str
    method: str | None
    status: int
    remaining: int
    retry_after: int | None
    delay: float
    code: str
    message: str

    def matches(self, method: str, path: str) -> bool:
        if self.remaining <= 0:
            return False
        if self.method is not None and self.method != method.upper():
            return False
        return fnmatch.fnmatchcase(path, self.path)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": self.path,
            "method": self.method,
            "status": self.status,
            "remaining": self.remaining,
            "retryAfter": self.retry_after,
            "delay": self.delay,
            "code": self.code,
            "message": self.message,
        }


class WireControl:
    def __init__(self, state: EmulatorState, log_size: int) -> None:
        self.state = state
        self.requests: deque[dict[str, Any]] = deque(maxlen=log_size)
        self.counts: Counter[tuple[str, str]] = Counter()
        """(method, path) → requests received: unlike the log, never forgets one, so a test
        can assert that a resource was not read at all."""
        self.faults: list[Fault] = []
        self._ids = itertools.count(1)

    def reset(self) -> None:
        self.requests.clear()
        self.counts.clear()
        self.faults.clear()

    def count(self, path: str, method: str | None = None) -> int:
        """Requests received for paths matching the glob ``path`` (and ``method``)."""
        return sum(
            n
            for (m, p), n in self.counts.items()
            if fnmatch.fnmatchcase(p, path) and (method is None or m == method.upper())
        )

    def add_fault(
        self,
        path: str,
        *,
        status: int = 429,
        count: int = 1,
        method: str | None = None,
        retry_after: int | None = None,
        delay: float = 0.0,
        code: str | None = None,
        message: str | None = None,
    ) -> Fault:
        default_code, default_message = _CODES.get(
            status, ("InjectedFault", f"Injected HTTP {status}.")
        )
        if status == 429 and retry_after is None:
            retry_after = 1
        fault = Fault(
            next(self._ids),
            path,
            method.upper() if method else None,
            status,
            count,
            retry_after,
            delay,
            code or default_code,
            message or default_message,
        )
        self.faults.append(fault)
        return fault

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        start_request()
        if request.path.startswith("/_emulator/"):
            response: web.StreamResponse = await handler(request)
            return response
        body = await request.read()
        entry: dict[str, Any] = {
            "at": iso(self.state.now()),
            "method": request.method,
            "path": request.path,
            "query": dict(request.query),
            "headers": {
                k: ("<redacted>" if k.lower() in _REDACTED_HEADERS else v)
                for k, v in request.headers.items()
            },
            "body": body[:_MAX_LOGGED_BODY].decode("utf-8", "replace"),
            "status": None,
            "fault": None,
        }
        self.requests.append(entry)
        self.counts[(request.method, request.path)] += 1
        fault = next((f for f in self.faults if f.matches(request.method, request.path)), None)
        if fault is not None:
            fault.remaining -= 1
            entry["fault"] = fault.id
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.status < 400:
                # A pure delay: let the request through afterwards.
                response = await handler(request)
                entry["status"] = response.status
                return response
            headers = (
                {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
            )
            entry["status"] = fault.status
            return web.json_response(
                error_body(request, fault.code, fault.message), status=fault.status, headers=headers
            )
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            entry["status"] = exc.status
            raise
        entry["status"] = response.status
        return response
