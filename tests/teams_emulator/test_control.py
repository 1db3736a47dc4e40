"""The control API and the command line: seeding, inline images, device login page, reset."""

from __future__ import annotations

import base64
from pathlib import Path

from graph_emulator.__main__ import load_seed

from .conftest import Emulator

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def test_seed_file_in_yaml(tmp_path: Path) -> None:
    seed = tmp_path / "demo.yaml"
    seed.write_text(
        "tenants:\n"
        "  - displayName: Fabrikam\n"
        "    users:\n"
        "      - {displayName: Ada Lovelace, password: pw}\n",
        encoding="utf-8",
    )
    assert load_seed(seed) == {
        "tenants": [
            {
                "displayName": "Fabrikam",
                "users": [{"displayName": "Ada Lovelace", "password": "pw"}],
            }
        ]
    }


async def test_inline_image_from_a_teams_user(emulator: Emulator) -> None:
    posted = await emulator.post_as(
        "alex",
        emulator.chat(0),
        '<p>look</p><img src="../hostedContents/1/$value">',
        hostedContents=[
            {
                "temporaryId": "1",
                "contentType": "image/png",
                "contentBytes": base64.b64encode(PNG).decode(),
            }
        ],
    )
    content = posted["body"]["content"]
    assert "../hostedContents" not in content
    url = content.split('src="', 1)[1].split('"', 1)[0]
    assert url.startswith(
        emulator.graph_url + f"/chats/{emulator.chat(0)}/messages/{posted['id']}/hostedContents/"
    )

    graph = emulator.user_client("adele")
    item = graph.chats.by_chat_id(emulator.chat(0)).messages.by_chat_message_id(posted["id"])
    listed = await item.hosted_contents.get()
    assert listed is not None and len(listed.value or []) == 1
    hosted_id = (listed.value or [])[0].id
    assert hosted_id is not None and url.endswith(f"/{hosted_id}/$value")
    data = await item.hosted_contents.by_chat_message_hosted_content_id(hosted_id).content.get()
    assert data == PNG


async def test_device_login_page_approves(emulator: Emulator) -> None:
    url = f"{emulator.base}/{emulator.tenant_id}/oauth2/v2.0/devicecode"
    async with emulator.session.post(
        url, data={"client_id": emulator.app["clientId"], "scope": "User.Read"}
    ) as r:
        started = await r.json()
    form = {
        "user_code": started["user_code"],
        "username": emulator.user("adele")["userPrincipalName"],
        "password": "adele-pw",
    }
    async with emulator.session.post(started["verification_uri"], data=form) as response:
        assert "Signed in as Adele Vance" in await response.text()


async def test_request_log_and_reset(emulator: Emulator) -> None:
    await emulator.app_client().chats.get()
    log = await emulator.control("GET", "/requests?path=/v1.0/*")
    [entry] = log["value"]
    assert entry["method"] == "GET" and entry["status"] == 200
    assert entry["headers"]["Authorization"] == "<redacted>"
    await emulator.control("POST", "/reset")
    assert emulator.services.state.users == {}
    assert (await emulator.control("GET", "/requests"))["value"] == []
