"""``GET …/channels/{id}/messages/delta`` as the msgraph SDK reads it: a first round, pages,
and a later round from its deltaLink with new, edited, deleted and reacted-to roots, and the
root of a thread that got a reply; never the replies themselves."""

from __future__ import annotations

from typing import Any

from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph.generated.teams.item.channels.item.messages.delta.delta_request_builder import (
    DeltaRequestBuilder,
)

from .conftest import Emulator


async def _round(delta: Any, first: Any) -> tuple[list[str], str]:
    """Every page of a round: the ids listed and the deltaLink that ends it."""
    ids: list[str] = []
    page = first
    while True:
        ids += [m.id for m in page.value or []]
        if not page.odata_next_link:
            return ids, str(page.odata_delta_link)
        page = await delta.with_url(page.odata_next_link).get()


async def test_a_later_round_lists_what_changed_since_the_first(emulator: Emulator) -> None:
    team = emulator.seeded["tenants"][0]["teams"][0]
    team_id, channel_id = team["id"], team["channels"][0]["id"]
    path = f"/teams/{team_id}/channels/{channel_id}/messages"
    adele = emulator.user("adele")["id"]

    async def post(content: str, **extra: Any) -> str:
        body = {"from": adele, "content": content, **extra}
        return str((await emulator.control("POST", path, body))["id"])

    roots = [await post(f"root {n}") for n in range(5)]
    delta = (
        emulator.app_client().teams.by_team_id(team_id).channels.by_channel_id(channel_id)
    ).messages.delta
    query = DeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(top=2)
    first = await delta.get(RequestConfiguration(query_parameters=query))
    listed, link = await _round(delta, first)
    assert sorted(listed) == sorted(roots) and "$deltatoken=" in link

    reply = await post("a reply", replyToId=roots[0])
    await emulator.control("PATCH", f"{path}/{roots[1]}", {"as": adele, "content": "edited"})
    await emulator.control("POST", f"{path}/{roots[2]}/softDelete", {"as": adele})
    await emulator.control(
        "POST", f"{path}/{roots[3]}/setReaction", {"as": adele, "reactionType": "👍"}
    )
    new = await post("root 5")
    changed, _ = await _round(delta, await delta.with_url(link).get())
    assert set(changed) == {roots[0], roots[1], roots[2], roots[3], new}
    assert reply not in changed
