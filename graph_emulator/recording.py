"""Graph exchanges kept for a test that validates them against Microsoft's OpenAPI description.

Off unless a test turns it on (``app[RECORDING].enabled = True``); then every answer under
``/v1.0`` is kept with its request line, status, content type and body, in the form
``tests/teams_emulator/openapi_check.check`` reads.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.payload import BytesPayload


@dataclass(slots=True)
class Recording:
    enabled: bool = False
    exchanges: list[dict[str, Any]] = field(default_factory=list)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        response: web.StreamResponse = await handler(request)
        if self.enabled and request.path.startswith("/v1.0"):
            raw = response.body if isinstance(response, web.Response) else b""
            # A str or JSON body is kept as a payload, not as bytes.
            data = raw.decode().encode() if isinstance(raw, BytesPayload) else raw
            data = data if isinstance(data, bytes) else b""
            self.exchanges.append(
                {
                    "method": request.method,
                    "path": request.rel_url.raw_path.removeprefix("/v1.0"),
                    "query": request.query_string,
                    "status": response.status,
                    "contentType": response.content_type,
                    "body": data.decode("utf-8", "replace"),
                    "raw": base64.b64encode(data).decode(),
                    "pattern": "",
                }
            )
        return response


RECORDING = web.AppKey("pontis_graph_recording", Recording)
