"""Dev-time check of the emulator's wire shapes against Microsoft's OpenAPI description.

Not a test (pytest does not collect it) and not run in CI: it needs openapi-core, which is
not a project dependency, and the OpenAPI file, which is not in the repository. Two steps,
in two environments:

    .venv/bin/python -m tests.teams_emulator.openapi_check record /tmp/graph-recorded.json
    python3 -m venv /tmp/oavenv && /tmp/oavenv/bin/pip install openapi-core
    /tmp/oavenv/bin/python tests/teams_emulator/openapi_check.py validate \\
        teams-v1.0-subset.openapi.json /tmp/graph-recorded.json

``record`` drives a seeded emulator through every Graph operation it implements (successes
and errors) and saves each exchange, plus the notifications a receiver got. ``validate``
matches each exchange to its OpenAPI operation and validates the body (errors against
``ODataError``, notifications against ``changeNotificationCollection``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

PNG = base64.b64encode(
    base64.b64decode(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
    )
).decode()


async def record() -> dict[str, Any]:
    import aiohttp
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from graph_emulator import EmulatorConfig, create_app
    from tests.teams_emulator.conftest import SEED

    notifications: list[dict[str, Any]] = []

    async def receive(request: web.Request) -> web.Response:
        if "validationToken" in request.query:
            return web.Response(text=request.query["validationToken"], content_type="text/plain")
        notifications.append(await request.json())
        return web.Response(status=202)

    receiver_app = web.Application()
    receiver_app.router.add_post("/{tail:.*}", receive)
    receiver = TestServer(receiver_app, host="127.0.0.1")
    emulator = TestServer(create_app(EmulatorConfig(retry_delays=())), host="127.0.0.1")
    await receiver.start_server()
    await emulator.start_server()
    base = str(emulator.make_url("")).rstrip("/")
    exchanges: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as session:

        async def control(method: str, path: str, body: object = None) -> Any:
            async with session.request(method, f"{base}/_emulator{path}", json=body) as r:
                return await r.json(content_type=None) if r.status != 204 else None

        seeded = (await control("POST", "/seed", SEED))["tenants"][0]
        app, users = seeded["apps"][0], {u["givenName"]: u for u in seeded["users"]}
        app_token = (await control("POST", "/tokens", {"clientId": app["clientId"]}))[
            "access_token"
        ]
        adele = (
            await control(
                "POST", "/tokens", {"clientId": app["clientId"], "user": users["Adele"]["id"]}
            )
        )["access_token"]
        megan = (
            await control(
                "POST", "/tokens", {"clientId": app["clientId"], "user": users["Megan"]["id"]}
            )
        )["access_token"]
        chat, one = seeded["chats"][0]["id"], seeded["chats"][1]["id"]
        team, channel = seeded["teams"][0]["id"], seeded["teams"][0]["channels"][0]["id"]

        async def call(
            method: str, path: str, token: str, body: object = None, pattern: str = ""
        ) -> Any:
            async with session.request(
                method,
                f"{base}/v1.0{path}",
                json=body,
                headers={"Authorization": f"Bearer {token}"},
            ) as r:
                raw = await r.read()
                exchanges.append(
                    {
                        "method": method,
                        "path": path.split("?")[0],
                        "query": path.split("?")[1] if "?" in path else "",
                        "status": r.status,
                        "contentType": r.content_type,
                        "body": raw.decode("utf-8", "replace"),
                        "pattern": pattern,
                    }
                )
                return json.loads(raw) if raw and r.content_type.endswith("json") else None

        for n in range(4):
            await control(
                "POST", f"/chats/{chat}/messages", {"from": users["Alex"]["id"], "content": f"m{n}"}
            )
        sub = await call(
            "POST",
            "/subscriptions",
            app_token,
            {
                "changeType": "created,updated,deleted",
                "notificationUrl": str(receiver.make_url("/n")),
                "lifecycleNotificationUrl": str(receiver.make_url("/l")),
                "resource": "/chats/getAllMessages",
                "expirationDateTime": (datetime.now(UTC) + timedelta(hours=2)).isoformat(),
                "clientState": "x",
            },
        )
        await call("GET", f"/users/{users['Adele']['id']}", app_token)
        await call("GET", "/me", adele)
        await call("GET", "/chats", app_token)
        await call("GET", "/me/chats?$expand=members", adele)
        await call("GET", f"/users/{users['Adele']['id']}/chats", app_token)
        await call("GET", f"/chats/{chat}", adele)
        await call("GET", f"/users/{users['Adele']['id']}/chats/{chat}", adele)
        await call("GET", f"/chats/{chat}/members", app_token)
        page = await call("GET", f"/chats/{chat}/messages?$top=2", adele)
        await call("GET", page["@odata.nextLink"].split("/v1.0", 1)[1], adele)
        posted = await call(
            "POST",
            f"/chats/{chat}/messages",
            adele,
            {
                "body": {
                    "contentType": "html",
                    "content": '<p>hi</p><img src="../hostedContents/1/$value">',
                },
                "hostedContents": [
                    {
                        "@microsoft.graph.temporaryId": "1",
                        "contentBytes": PNG,
                        "contentType": "image/png",
                    }
                ],
            },
        )
        msg = f"/chats/{chat}/messages/{posted['id']}"
        await call("PATCH", msg, adele, {"body": {"contentType": "text", "content": "edited"}})
        await call("POST", msg + "/setReaction", adele, {"reactionType": "👍"})
        await call("GET", msg, adele)
        await call("POST", msg + "/unsetReaction", adele, {"reactionType": "👍"})
        hosted = await call("GET", msg + "/hostedContents", adele)
        await call("GET", f"{msg}/hostedContents/{hosted['value'][0]['id']}", adele)
        await call("POST", msg + "/softDelete", adele)
        await call("GET", msg, adele)
        await call("POST", msg + "/undoSoftDelete", adele)
        await call(
            "POST", f"/users/{users['Adele']['id']}{msg}/setReaction", adele, {"reactionType": "❤"}
        )
        await call("GET", f"/users/{users['Adele']['id']}{msg}", adele)
        await call("GET", f"/teams/{team}", app_token)
        await call("GET", f"/teams/{team}/channels", app_token)
        await call("GET", f"/teams/{team}/channels/{channel}", app_token)
        root = await call(
            "POST",
            f"/teams/{team}/channels/{channel}/messages",
            adele,
            {"body": {"content": "root"}},
        )
        ch_msg = f"/teams/{team}/channels/{channel}/messages/{root['id']}"
        reply = await call("POST", ch_msg + "/replies", adele, {"body": {"content": "reply"}})
        await call("GET", f"/teams/{team}/channels/{channel}/messages", adele)
        await call("GET", ch_msg, adele)
        await call("GET", ch_msg + "/replies", adele)
        await call("GET", f"{ch_msg}/replies/{reply['id']}", adele)
        await call("PATCH", f"{ch_msg}/replies/{reply['id']}", adele, {"body": {"content": "r2"}})
        await call(
            "POST", f"{ch_msg}/replies/{reply['id']}/setReaction", adele, {"reactionType": "😀"}
        )
        await call("GET", "/subscriptions", app_token)
        await call("GET", f"/subscriptions/{sub['id']}", app_token)
        await call(
            "PATCH",
            f"/subscriptions/{sub['id']}",
            app_token,
            {"expirationDateTime": (datetime.now(UTC) + timedelta(hours=3)).isoformat()},
        )
        await call("POST", f"/subscriptions/{sub['id']}/reauthorize", app_token)
        await control(
            "POST", f"/subscriptions/{sub['id']}/lifecycle", {"event": "reauthorizationRequired"}
        )
        # Errors, each in Graph's error format.
        await call(
            "POST", f"/chats/{chat}/messages", app_token, {"body": {"content": "x"}}, "error"
        )
        await call("GET", f"/chats/{chat}/messages", megan, None, "error")
        await call("GET", "/chats/19:nope@thread.v2", app_token, None, "error")
        await call("GET", "/chats", "x.y.z", None, "error")
        await call("GET", f"/chats/{one}/messages?$top=500", megan, None, "error")
        await call(
            "POST", "/subscriptions", app_token, {"resource": "/chats/getAllMessages"}, "error"
        )
        await call("DELETE", f"/subscriptions/{sub['id']}", app_token)
        await asyncio.sleep(0.5)
    await emulator.close()
    await receiver.close()
    return {"exchanges": exchanges, "notifications": notifications}


def validate(spec_path: Path, recorded_path: Path) -> int:
    from openapi_core import OpenAPI
    from openapi_core.testing import MockRequest, MockResponse
    from openapi_schema_validator import OAS30Validator

    spec = json.loads(spec_path.read_text())
    openapi = OpenAPI.from_dict(spec)
    recorded = json.loads(recorded_path.read_text())
    server = spec["servers"][0]["url"].rstrip("/")
    host, _, prefix = server.partition("//")[2].partition("/")
    failures = 0

    def schema_errors(name: str, data: object) -> list[str]:
        validator = OAS30Validator(
            {"$ref": f"#/components/schemas/{name}", "components": spec["components"]},
            format_checker=None,
        )
        return [
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(data)
        ]

    for ex in recorded["exchanges"]:
        label = f"{ex['method']} {ex['path']}{'?' + ex['query'] if ex['query'] else ''} -> {ex['status']}"
        if ex["pattern"] == "error" or ex["status"] >= 400:
            problems = schema_errors(
                "microsoft.graph.ODataErrors.ODataError", json.loads(ex["body"])
            )
        elif not ex["body"]:
            print(f"ok    {label} (no body)")
            continue
        else:
            request = MockRequest(
                f"https://{host}",
                ex["method"],
                f"/{prefix}{ex['path']}",
                args=dict(_query(ex["query"])),
            )
            response = MockResponse(
                ex["body"].encode(), status_code=ex["status"], content_type="application/json"
            )
            try:
                openapi.validate_response(request, response)
                problems = []
            except Exception as exc:  # openapi-core raises a family of errors; report any
                cause = exc.__cause__ or exc
                details = getattr(cause, "schema_errors", None) or []
                problems = [type(exc).__name__] + [
                    f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in details
                ]
                if not details:
                    problems.append(str(cause)[:300])
        failures += bool(problems)
        print(("FAIL  " if problems else "ok    ") + label)
        for problem in problems[:12]:
            print("      " + problem)
    for body in recorded["notifications"]:
        problems = schema_errors("microsoft.graph.changeNotificationCollection", body)
        kind = (
            "lifecycle"
            if "lifecycleEvent" in body["value"][0]
            else body["value"][0].get("changeType")
        )
        failures += bool(problems)
        print(("FAIL  " if problems else "ok    ") + f"notification ({kind})")
        for problem in problems:
            print("      " + problem)
    print(f"{failures} failure(s)")
    return 1 if failures else 0


def _query(raw: str) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl

    return parse_qsl(raw)


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "record":
        recorded = asyncio.run(record())
        Path(sys.argv[2]).write_text(json.dumps(recorded, indent=1, ensure_ascii=False))
        print(
            f"recorded {len(recorded['exchanges'])} exchanges, {len(recorded['notifications'])} notifications"
        )
        return 0
    if len(sys.argv) == 4 and sys.argv[1] == "validate":
        return validate(Path(sys.argv[2]), Path(sys.argv[3]))
    print(__doc__)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
