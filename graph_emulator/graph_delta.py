"""``GET /teams/{id}/channels/{id}/messages/delta``: a channel's top-level messages changed
since a round of change tracking, as Graph documents ``chatMessage: delta``.

A first round (no ``$deltatoken``) lists every top-level message, or those changed after a
``$filter=lastModifiedDateTime gt <time>``; each round is paged with ``@odata.nextLink`` and
ends with an ``@odata.deltaLink`` whose token is the moment the round began. A later round
lists the top-level messages changed since then, new, edited, soft-deleted (with
``deletedDateTime``) and reacted to alike; replies are not listed (a new reply moves its root's
``lastModifiedDateTime``: see ``teamwork.post_message``), read them with ``…/replies``.
A message changed in the very millisecond a round began is listed again in the next round:
tracking may repeat a change, never lose one.
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

from aiohttp import web

from . import permissions as perm
from .graph_messages import _FILTER, _ms, where
from .odata import (
    bad_request,
    context_url,
    decode_skiptoken,
    encode_skiptoken,
    json_response,
    origin,
    page_of,
    parse_iso,
)
from .shapes import message_json
from .state import Message


def _since(request: web.Request) -> tuple[int, bool]:
    """The moment the round tracks changes from (ms) and whether it is inclusive."""
    token = request.query.get("$deltatoken")
    if token is not None:
        if not token.isdigit():
            raise bad_request("The $deltatoken is not valid.")
        return int(token), True
    raw = request.query.get("$filter", "").strip()
    if not raw:
        return 0, True
    match = _FILTER.match(raw)
    moment = parse_iso(match.group(3)) if match else None
    if match is None or moment is None or match.group(1).lower() != "lastmodifieddatetime":
        raise bad_request(f"Invalid filter clause '{raw}'; delta filters lastModifiedDateTime.")
    if match.group(2).lower() not in {"gt", "ge"}:
        raise bad_request("Only 'gt' is supported in the delta $filter.")
    return _ms(moment), match.group(2).lower() == "ge"


async def channel_delta(request: web.Request) -> web.Response:
    here = where(request)
    perm.require(here.grant, here.rules.read)
    skiptoken = request.query.get("$skiptoken")
    round_start = _ms(here.svc.state.now())
    if skiptoken is not None:
        started = decode_skiptoken(skiptoken).get("round")
        if not isinstance(started, int):
            raise bad_request("The $skiptoken is not valid.")
        round_start = started
    since, inclusive = _since(request)

    def changed(m: Message) -> bool:
        moment = _ms(m.last_modified)
        return moment >= since if inclusive else moment > since

    def key(m: Message) -> tuple[int, int]:
        return (_ms(m.last_modified), int(m.id))

    messages = sorted(
        (m for m in here.conversation.messages.values() if changed(m)), key=key, reverse=True
    )
    cfg = here.svc.config
    page, token = page_of(
        request, messages, key, default=cfg.default_page_size, maximum=cfg.max_page_size
    )
    base = f"{origin(request, cfg.public_url)}{request.rel_url.raw_path}"
    body: dict[str, object] = {
        "@odata.context": context_url(request, cfg.public_url, "Collection(chatMessage)")
    }
    if token is not None:
        state = decode_skiptoken(token)
        state["round"] = round_start
        params = {k: v for k, v in request.query.items() if k != "$skiptoken"}
        params["$skiptoken"] = encode_skiptoken(state)
        body["@odata.nextLink"] = f"{base}?{urlencode(params, quote_via=quote, safe='$:,()')}"
    else:
        body["@odata.deltaLink"] = f"{base}?$deltatoken={round_start}"
    body["value"] = [message_json(here.svc.state, m) for m in page]
    return json_response(body)


def add_delta_routes(app: web.Application, prefix: str) -> None:
    """Before ``{prefix}/messages/{message_id}``, which would take ``delta()`` for an id."""
    for name in ("delta()", "delta"):
        app.router.add_get(f"{prefix}/messages/{name}", channel_delta)
