"""``GET /users``: the tenant's directory, searched as Graph's advanced queries do.

Graph takes ``$search="displayName:ann" OR "mail:ann"`` only with the header
``ConsistencyLevel: eventual`` (else ``400``); each clause matches a property whose words
(split at spaces, dots, dashes, ``@`` and ``_``) include one starting with the text, without
regard to case. Listing the directory needs ``User.ReadBasic.All`` or more: ``User.Read``
reads only the signed-in user. The emulator serves ``$top`` and one page.
"""

from __future__ import annotations

import hashlib
import re

from aiohttp import web

from . import permissions as perm
from .odata import bad_request, collection, entity, not_found, odata_key, top_param
from .services import services
from .shapes import user_json
from .state import Photo, User

# Profile photos: ``ProfilePhoto.Read.All`` or any right to read users.
READ_PHOTO = perm.Need(
    ("User.Read", "User.ReadBasic.All", "User.Read.All", "ProfilePhoto.Read.All"),
    ("User.ReadBasic.All", "User.Read.All", "ProfilePhoto.Read.All"),
)
MAX_PHOTO = 4 * 1024 * 1024

_CLAUSE = re.compile(
    r'"(?P<prop>displayName|mail|userPrincipalName|givenName|surname):(?P<text>[^"]*)"'
)
_TOKEN = re.compile(r'"[^"]*"|\S+')
_WORDS = re.compile(r"[\s.@_\-]+")
_PROPERTIES = {
    "displayName": lambda u: u.display_name,
    "mail": lambda u: u.mail,
    "userPrincipalName": lambda u: u.user_principal_name,
    "givenName": lambda u: u.given_name,
    "surname": lambda u: u.surname,
}


async def list_users(request: web.Request) -> web.Response:
    svc = services(request)
    grant = svc.identity.authenticate(request)
    perm.require(grant, perm.LIST_USERS)
    top = top_param(request, 100, 999)
    users = [u for u in svc.state.users.values() if u.tenant_id == grant.tenant_id]
    search = request.query.get("$search")
    if search is not None:
        if request.headers.get("ConsistencyLevel", "").lower() != "eventual":
            raise bad_request(
                "Request with $search query parameter only works through MSGraph with a special"
                " request header: 'ConsistencyLevel: eventual'"
            )
        users = [u for u in users if _matches(search, u)]
    if "$filter" in request.query:
        raise bad_request("The emulator supports $search on users, not $filter.")
    users.sort(key=lambda u: (u.display_name.lower(), u.id))
    return collection(request, svc.config.public_url, "users", [user_json(u) for u in users[:top]])


def _matches(search: str, user: User) -> bool:
    tokens = _TOKEN.findall(search.strip())
    clauses, joins = tokens[0::2], [j.upper() for j in tokens[1::2]]
    if (
        not clauses
        or not all(_CLAUSE.fullmatch(c) for c in clauses)
        or not all(j in ("OR", "AND") for j in joins)
    ):
        raise bad_request(f"Syntax error: invalid $search '{search}'.")
    if len(set(joins)) > 1:
        raise bad_request("The emulator supports either OR or AND in one $search, not both.")
    results = [_clause(c, user) for c in clauses]
    return all(results) if joins and joins[0] == "AND" else any(results)


def _clause(clause: str, user: User) -> bool:
    found = _CLAUSE.fullmatch(clause)
    assert found is not None
    value = _PROPERTIES[found["prop"]](user) or ""
    text = found["text"].strip().lower()
    if not text:
        return True
    words = [w for w in _WORDS.split(value.lower()) if w]
    return value.lower().startswith(text) or any(w.startswith(text) for w in words)


def _photo_of(request: web.Request) -> tuple[User, Photo]:
    svc = services(request)
    grant = svc.identity.authenticate(request)
    perm.require(grant, READ_PHOTO)
    user = svc.state.user(request.match_info["user_id"], grant.tenant_id)
    if user.photo is None:
        # What Graph answers for a user who never set a photo.
        raise not_found("The photo wasn't found.")
    return user, user.photo


async def get_photo(request: web.Request) -> web.Response:
    """``GET /users/{id}/photo``: the photo's metadata; its ``@odata.mediaEtag`` changes with
    the picture."""
    user, photo = _photo_of(request)
    svc = services(request)
    data = {
        "@odata.mediaContentType": photo.content_type,
        "@odata.mediaEtag": photo.etag,
        "id": "default",
        "height": 240,
        "width": 240,
    }
    context = f"users({odata_key(user.id)})/photo/$entity"
    return entity(request, svc.config.public_url, context, data)


async def get_photo_value(request: web.Request) -> web.Response:
    _, photo = _photo_of(request)
    return web.Response(
        body=photo.data, content_type=photo.content_type, headers={"ETag": photo.etag}
    )


async def set_photo(request: web.Request) -> web.Response:
    """Control API: ``PUT /_emulator/users/{id}/photo`` with the picture as the body (as the
    person would upload it in Teams); ``DELETE`` removes it."""
    svc = services(request)
    user = svc.state.find_user(request.match_info["user_id"])
    if user is None:
        return web.json_response({"error": "no such user"}, status=404)
    if request.method == "DELETE":
        user.photo = None
        return web.Response(status=204)
    data = await request.read()
    if not data or len(data) > MAX_PHOTO:
        return web.json_response({"error": "a photo of 1 byte to 4 MB"}, status=400)
    etag = f'W/"{hashlib.sha256(data).hexdigest()[:32]}"'
    user.photo = Photo(request.content_type or "image/jpeg", data, etag)
    return web.json_response({"etag": etag})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1.0/users", list_users)
    app.router.add_get("/v1.0/users/{user_id}/photo", get_photo)
    app.router.add_get("/v1.0/users/{user_id}/photo/$value", get_photo_value)
    app.router.add_put("/_emulator/users/{user_id}/photo", set_photo)
    app.router.add_delete("/_emulator/users/{user_id}/photo", set_photo)
