"""The emulator's wire shapes against Microsoft's OpenAPI description of Graph.

``record`` drives a seeded emulator through every Graph operation it implements (successes
and errors) and keeps each exchange, plus the notifications a receiver got; ``validate``
matches each exchange to its OpenAPI operation and validates the body (errors against
``ODataError``, notifications against ``changeNotificationCollection``), and each object in it
that names its type (``"@odata.type"``) against that type's schema. ``test_openapi.py``
runs both in CI against ``graph-openapi-slice.json``; by hand:

    .venv/bin/python -m tests.teams_emulator.openapi_check record /tmp/graph-recorded.json
    .venv/bin/python -m tests.teams_emulator.openapi_check validate \\
        tests/teams_emulator/graph-openapi-slice.json /tmp/graph-recorded.json
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
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
    from tests.teams_emulator.openapi_drive import record_drive, recorded

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
            method: str,
            path: str,
            token: str,
            body: object = None,
            pattern: str = "",
            headers: dict[str, str] | None = None,
        ) -> Any:
            async with session.request(
                method,
                f"{base}/v1.0{path}",
                json=body,
                headers={"Authorization": f"Bearer {token}", **(headers or {})},
            ) as r:
                return await recorded(exchanges, method, path, pattern, r)

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
        await call(
            "GET",
            '/users?$search="displayName:meg"',
            adele,
            headers={"ConsistencyLevel": "eventual"},
        )
        await call("GET", "/users?$top=2", app_token)
        await call("GET", '/users?$search="displayName:x"', adele, None, "error")
        await call(
            "POST",
            "/chats",
            adele,
            {
                "chatType": "group",
                "topic": "new",
                "members": [
                    {
                        "@odata.type": "#microsoft.graph.aadUserConversationMember",
                        "roles": ["owner"],
                        "user@odata.bind": f"https://graph.microsoft.com/v1.0/users('{u['id']}')",
                    }
                    for u in (users["Adele"], users["Alex"], users["Megan"])
                ],
            },
        )
        await call("POST", "/chats", adele, {"chatType": "group", "members": []}, "error")
        pair = await call(
            "POST",
            "/chats",
            adele,
            {
                "chatType": "group",
                "topic": "pair",
                "members": [
                    {
                        "@odata.type": "#microsoft.graph.aadUserConversationMember",
                        "roles": ["owner"],
                        "user@odata.bind": f"https://graph.microsoft.com/v1.0/users('{u['id']}')",
                    }
                    for u in (users["Adele"], users["Alex"])
                ],
            },
        )
        await call(
            "POST",
            f"/chats/{pair['id']}/members",
            adele,
            {
                "@odata.type": "#microsoft.graph.aadUserConversationMember",
                "roles": ["owner"],
                "user@odata.bind": f"https://graph.microsoft.com/v1.0/users('{users['Megan']['id']}')",
            },
        )
        await call("POST", f"/chats/{pair['id']}/members", adele, {"roles": []}, "error")
        pair_members = await call("GET", f"/chats/{pair['id']}/members", adele)
        gone = next(m for m in pair_members["value"] if m["userId"] == users["Megan"]["id"])
        await call("DELETE", f"/chats/{pair['id']}/members/{gone['id']}", adele)
        await call("DELETE", f"/chats/{pair['id']}/members/{gone['id']}", adele, None, "error")
        # A member leaves by removing their own membership; no longer one, they remove nobody.
        mine = next(m for m in pair_members["value"] if m["userId"] == users["Adele"]["id"])
        other = next(m for m in pair_members["value"] if m["userId"] == users["Alex"]["id"])
        await call("DELETE", f"/chats/{pair['id']}/members/{mine['id']}", adele)
        await call("DELETE", f"/chats/{pair['id']}/members/{other['id']}", adele, None, "error")
        photo = base64.b64decode(PNG)
        async with session.put(
            f"{base}/_emulator/users/{users['Alex']['id']}/photo",
            data=photo,
            headers={"Content-Type": "image/png"},
        ):
            pass
        await call("GET", f"/users/{users['Alex']['id']}/photo", app_token)
        await call("GET", f"/users/{users['Alex']['id']}/photo/$value", app_token)
        await call("GET", f"/users/{users['Megan']['id']}/photo", app_token, None, "error")
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
                    "content": '<p>hi <at id="0">Alex</at></p><img src="../hostedContents/1/$value">',
                },
                "mentions": [
                    {
                        "id": 0,
                        "mentionText": "Alex",
                        "mentioned": {
                            "user": {
                                "id": users["Alex"]["id"],
                                "displayName": "Alex Wilber",
                                "userIdentityType": "aadUser",
                            }
                        },
                    }
                ],
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
        hc = hosted["value"][0]["id"]
        await call("GET", f"{msg}/hostedContents/{hc}", adele)
        await call("GET", f"{msg}/hostedContents/{hc}/$value", adele)
        mine = f"/users/{users['Adele']['id']}/chats/{chat}"
        await call("GET", f"{mine}/members", adele)
        await call("GET", f"{mine}/messages?$top=2", adele)
        await call("GET", f"{mine}{msg.split(chat, 1)[1]}/hostedContents/{hc}", adele)
        await call("GET", f"{mine}{msg.split(chat, 1)[1]}/hostedContents/{hc}/$value", adele)
        other = await call("POST", f"{mine}/messages", adele, {"body": {"content": "via user"}})
        theirs = f"{mine}/messages/{other['id']}"
        await call("PATCH", theirs, adele, {"body": {"content": "via user, edited"}})
        await call("POST", theirs + "/setReaction", adele, {"reactionType": "👍"})
        await call("POST", theirs + "/unsetReaction", adele, {"reactionType": "👍"})
        await call("POST", theirs + "/softDelete", adele)
        await call("POST", theirs + "/undoSoftDelete", adele)
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
        picture = {
            "body": {"contentType": "html", "content": '<img src="../hostedContents/1/$value">'},
            "hostedContents": [
                {
                    "@microsoft.graph.temporaryId": "1",
                    "contentBytes": PNG,
                    "contentType": "image/png",
                }
            ],
        }
        pictured = await call("POST", f"/teams/{team}/channels/{channel}/messages", adele, picture)
        pictured_reply = await call("POST", ch_msg + "/replies", adele, picture)
        for path in (
            f"/teams/{team}/channels/{channel}/messages/{pictured['id']}",
            f"{ch_msg}/replies/{pictured_reply['id']}",
        ):
            hc_id = _hosted_id(await call("GET", path, adele))
            await call("GET", f"{path}/hostedContents/{hc_id}", adele)
            await call("GET", f"{path}/hostedContents/{hc_id}/$value", adele)
        await call("GET", f"/teams/{team}/channels/{channel}/messages", adele)
        await call("GET", f"/teams/{team}/channels/{channel}/messages/delta()", app_token)
        await call("GET", ch_msg, adele)
        await call("GET", ch_msg + "/replies", adele)
        await call("GET", f"{ch_msg}/replies/{reply['id']}", adele)
        await call("POST", ch_msg + "/setReaction", adele, {"reactionType": "👍"})
        await call("POST", ch_msg + "/unsetReaction", adele, {"reactionType": "👍"})
        await call("PATCH", ch_msg, adele, {"body": {"content": "root, edited"}})
        await call(
            "POST", f"{ch_msg}/replies/{reply['id']}/unsetReaction", adele, {"reactionType": "😀"}
        )
        await call("POST", f"{ch_msg}/replies/{reply['id']}/softDelete", adele)
        await call("POST", f"{ch_msg}/replies/{reply['id']}/undoSoftDelete", adele)
        await call("POST", ch_msg + "/softDelete", adele)
        await call("POST", ch_msg + "/undoSoftDelete", adele)
        await call("PATCH", f"{ch_msg}/replies/{reply['id']}", adele, {"body": {"content": "r2"}})
        await call(
            "POST", f"{ch_msg}/replies/{reply['id']}/setReaction", adele, {"reactionType": "😀"}
        )
        await call("GET", f"/teams/{team}/channels/{channel}/members", app_token)
        board = await control(
            "POST",
            f"/teams/{team}/channels",
            {
                "displayName": "Board",
                "membershipType": "private",
                "members": [users["Adele"]["id"]],
            },
        )
        await call("GET", f"/teams/{team}/channels", adele)  # bridge-team: with Board
        await call("GET", f"/teams/{team}/channels", megan, None, "error")  # not in the team
        await call("GET", f"/teams/{team}/channels/{board['id']}", app_token)
        await call("GET", f"/teams/{team}/channels/{board['id']}/members", adele)
        await call("GET", f"/teams/{team}/channels/{board['id']}/members", megan, None, "error")
        await control(
            "POST",
            f"/teams/{team}/channels/{board['id']}/members",
            {"as": users["Adele"]["id"], "user": users["Alex"]["id"]},
        )
        await call("GET", f"/teams/{team}/channels/{board['id']}/messages", app_token)
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
        await record_drive(
            session, base, exchanges, {"app": app_token, "adele": adele, "megan": megan}, users,
            (team, channel),
        )  # fmt: skip
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


def _typed(node: object, where: str) -> list[tuple[str, dict[str, Any]]]:
    """Every object under ``node`` with an ``@odata.type``, with its JSON path."""
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        if isinstance(node.get("@odata.type"), str):
            found.append((where or "/", node))
        for key, value in node.items():
            found += _typed(value, f"{where}/{key}")
    elif isinstance(node, list):
        for n, value in enumerate(node):
            found += _typed(value, f"{where}/{n}")
    return found


def _hosted_id(message: dict[str, Any]) -> str:
    """The id of the first picture a message's HTML points at (``…/hostedContents/{id}/$value``)."""
    found = re.search(r"hostedContents/([^/]+)/\$value", message["body"]["content"])
    assert found is not None, message["body"]["content"]
    return found.group(1)


def check(spec: dict[str, Any], recorded: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """Each recorded exchange and notification with what is wrong with it (empty: valid)."""
    from openapi_core import OpenAPI
    from openapi_core.testing import MockRequest, MockResponse
    from openapi_schema_validator import OAS30Validator

    openapi = OpenAPI.from_dict(spec)
    server = spec["servers"][0]["url"].rstrip("/")
    host, _, prefix = server.partition("//")[2].partition("/")
    results: list[tuple[str, list[str]]] = []

    def schema_errors(name: str, data: object) -> list[str]:
        validator = OAS30Validator(
            {"$ref": f"#/components/schemas/{name}", "components": spec["components"]},
            format_checker=None,
        )
        return [
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(data)
        ]

    def typed_errors(body: object) -> list[str]:
        """Each object that names its type (``"@odata.type": "#microsoft.graph.X"``) against
        schema X: the operation's schema only knows the base type (``conversationMember``)."""
        problems = []
        for where, node in _typed(body, ""):
            name = str(node["@odata.type"]).removeprefix("#")
            if name in spec["components"]["schemas"]:
                problems += [f"{where} ({name}) {e}" for e in schema_errors(name, node)]
        return problems

    for ex in recorded["exchanges"]:
        label = f"{ex['method']} {ex['path']}{'?' + ex['query'] if ex['query'] else ''} -> {ex['status']}"
        if ex["pattern"] == "error" or ex["status"] >= 400:
            if ex["status"] < 400:
                problems = [f"expected an error, got {ex['status']}"]
            else:
                problems = schema_errors(
                    "microsoft.graph.ODataErrors.ODataError", json.loads(ex["body"])
                )
        elif not ex["body"]:
            problems = []
        else:
            request = MockRequest(
                f"https://{host}",
                ex["method"],
                f"/{prefix}{ex['path']}",
                args=dict(_query(ex["query"])),
            )
            # A stream (``…/$value``) is described as ``application/octet-stream``; Graph,
            # and the emulator, label a picture with its own type (``image/png``).
            json_body = (ex["contentType"] or "").endswith("json")
            response = MockResponse(
                ex["body"].encode() if json_body else ex["raw"].encode(),
                status_code=ex["status"],
                content_type="application/json" if json_body else "application/octet-stream",
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
            if json_body:
                problems += typed_errors(json.loads(ex["body"]))
        results.append((label, problems))
    for body in recorded["notifications"]:
        items = body.get("value") if isinstance(body, dict) else None
        first = items[0] if isinstance(items, list) and items and isinstance(items[0], dict) else {}
        kind = "lifecycle" if "lifecycleEvent" in first else first.get("changeType")
        problems = schema_errors("microsoft.graph.changeNotificationCollection", body)
        results.append((f"notification ({kind})", problems))
    return results


def validate(spec_path: Path, recorded_path: Path) -> int:
    results = check(json.loads(spec_path.read_text()), json.loads(recorded_path.read_text()))
    failures = 0
    for label, problems in results:
        failures += bool(problems)
        print(("FAIL  " if problems else "ok    ") + label)
        for problem in problems[:12]:
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
