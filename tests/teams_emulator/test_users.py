"""``GET /users`` with ``$search``, as the bridge's ``search teams`` asks it, refusals first."""

from __future__ import annotations

import pytest
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.users.users_request_builder import UsersRequestBuilder

from bridge.teams.directory import search_phrase

from .conftest import Emulator


async def _raw(emulator: Emulator, query: str, *, consistency: bool = True) -> tuple[int, dict]:  # type: ignore[type-arg]
    token = await emulator.app_provider().get_authorization_token(emulator.graph_url)
    headers = {"Authorization": f"Bearer {token}"}
    if consistency:
        headers["ConsistencyLevel"] = "eventual"
    async with emulator.http.get(f"{emulator.graph_url}/users{query}", headers=headers) as resp:
        return resp.status, await resp.json()


async def test_search_without_the_consistency_header_is_refused(emulator: Emulator) -> None:
    status, body = await _raw(emulator, '?$search="displayName:adele"', consistency=False)
    assert status == 400 and "ConsistencyLevel" in body["error"]["message"]


@pytest.mark.parametrize(
    "query", ["?$search=adele", '?$search="nickname:adele"', "?$filter=startswith(mail,'a')"]
)
async def test_a_search_graph_would_not_take_is_refused(emulator: Emulator, query: str) -> None:
    status, _ = await _raw(emulator, query)
    assert status == 400


async def test_a_user_token_with_user_read_cannot_list_the_directory(emulator: Emulator) -> None:
    graph = emulator.user_client("alex")  # User.Read: the signed-in user only
    with pytest.raises(ODataError) as refused:
        await graph.users.get()
    assert refused.value.response_status_code == 403


async def _search(emulator: Emulator, text: str) -> list[str]:
    params = UsersRequestBuilder.UsersRequestBuilderGetQueryParameters(
        search=search_phrase(text), top=10
    )
    config = RequestConfiguration(query_parameters=params)
    config.headers.add("ConsistencyLevel", "eventual")
    page = await emulator.app_client().users.get(config)
    assert page is not None and page.value is not None
    return [str(u.display_name) for u in page.value]


async def test_people_are_found_by_the_start_of_a_name_or_mail(emulator: Emulator) -> None:
    assert await _search(emulator, "ade") == ["Adele Vance"]
    assert await _search(emulator, "bow") == ["Megan Bowen"]  # a word of the name
    assert await _search(emulator, "alex.wil") == ["Alex Wilber"]  # the mail address
    assert await _search(emulator, "nobody") == []
    # A quote in what the user typed cannot end the phrase and widen the search.
    assert await _search(emulator, 'x" OR "displayName:a') == []
