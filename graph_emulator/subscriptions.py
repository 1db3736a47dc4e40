"""``/v1.0/subscriptions``: create (with the validation handshake), list, get, renew, delete,
reauthorize, following Graph's rules for chatMessage resources.

The rules a bridge trips over are enforced as Graph does: an expiration beyond 60 minutes
needs a lifecycleNotificationUrl, and 4320 minutes (3 days) is the ceiling; both URLs must
echo the validation token within 10 s; includeResourceData needs an encryption certificate;
tenant-wide resources need application permissions.
"""

from __future__ import annotations

from datetime import datetime

from aiohttp import web
from yarl import URL

from . import permissions as perm
from .odata import (
    GraphError,
    bad_request,
    context_url,
    entity,
    forbidden,
    json_response,
    new_guid,
    parse_iso,
    read_json,
)
from .resources import Target, parse_resource
from .services import Services, services
from .shapes import subscription_json
from .state import Subscription, TokenGrant

MAX_MINUTES_WITHOUT_LIFECYCLE = 60
MAX_MINUTES = 4320
CHANGE_TYPES = frozenset({"created", "updated", "deleted"})


def _validation_error(message: str) -> GraphError:
    return GraphError(400, "ValidationError", message)


def _check_url(svc: Services, name: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise _validation_error(f"{name} is a required property for subscription creation.")
    url = URL(value)
    if not url.is_absolute() or url.scheme not in {"https", "http"}:
        raise _validation_error(f"{name} must be an absolute URL.")
    if url.scheme == "http" and not svc.config.allow_http_notification_urls:
        raise _validation_error(f"The {name} must be HTTPS.")
    return value


def _check_expiry(svc: Services, value: object, has_lifecycle: bool) -> datetime:
    expires = parse_iso(value)
    if expires is None:
        raise _validation_error(
            "expirationDateTime is a required property and must be a date-time."
        )
    minutes = (expires - svc.state.now()).total_seconds() / 60
    if minutes <= 0:
        raise _validation_error("Subscription expiration date must be in the future.")
    if minutes > MAX_MINUTES:
        raise _validation_error(
            f"Subscription expiration can only be {MAX_MINUTES} minutes in the future."
        )
    if minutes > MAX_MINUTES_WITHOUT_LIFECYCLE and not has_lifecycle:
        raise _validation_error(
            "lifecycleNotificationUrl is a required property for subscription creation on this "
            "resource when the expirationDateTime value is set to greater than 1 hour."
        )
    return expires


def _authorize(svc: Services, grant: TokenGrant, target: Target) -> str | None:
    """Check the caller may watch ``target``; returns the user a /me resource stands for."""
    delegated = grant.user_id is not None
    if target.kind in {"all_chats", "all_channels"}:
        if delegated:
            raise forbidden(
                f"Subscriptions to tenant-wide resources ({target.kind}) need application permissions."
            )
        need = perm.READ_CHAT_MESSAGES if target.kind == "all_chats" else perm.READ_CHANNEL_MESSAGES
        perm.require(grant, need)
        return None
    if target.kind == "user_chats":
        user_id = (
            grant.user_id
            if target.first == "me"
            else svc.state.user(target.first or "", grant.tenant_id).id
        )
        if user_id is None:
            raise bad_request("/me resources are only valid with delegated authentication flow.")
        if delegated and user_id != grant.user_id:
            raise forbidden("A delegated token can subscribe only to the signed-in user's chats.")
        perm.require(grant, perm.READ_CHAT_MESSAGES)
        return user_id
    if target.kind == "chat":
        perm.require(grant, perm.READ_CHAT_MESSAGES)
        perm.require_member(grant, svc.state.chat(target.first or ""))
        return grant.user_id
    perm.require(grant, perm.READ_CHANNEL_MESSAGES)
    if target.kind == "channel":
        perm.require_member(grant, svc.state.channel(target.first or "", target.channel_id or ""))
    else:
        team = svc.state.team(target.first or "")
        if team.tenant_id != grant.tenant_id or (delegated and grant.user_id not in team.members):
            raise forbidden("The caller is not a member of this team.")
    return grant.user_id


async def create_subscription(request: web.Request) -> web.Response:
    svc = services(request)
    grant = svc.identity.authenticate(request)
    data = await read_json(request)
    resource = data.get("resource")
    if not isinstance(resource, str) or not resource:
        raise _validation_error("resource is a required property for subscription creation.")
    change_types = frozenset(
        c.strip() for c in str(data.get("changeType") or "").split(",") if c.strip()
    )
    if not change_types or not change_types <= CHANGE_TYPES:
        raise _validation_error(
            f"changeType '{data.get('changeType')}' is not valid; use created, updated and/or deleted."
        )
    notification_url = _check_url(svc, "notificationUrl", data.get("notificationUrl"))
    lifecycle_raw = data.get("lifecycleNotificationUrl")
    lifecycle_url = (
        _check_url(svc, "lifecycleNotificationUrl", lifecycle_raw) if lifecycle_raw else None
    )
    expires = _check_expiry(svc, data.get("expirationDateTime"), lifecycle_url is not None)
    client_state = data.get("clientState")
    if client_state is not None and (not isinstance(client_state, str) or len(client_state) > 128):
        raise _validation_error("clientState must be a string of at most 128 characters.")
    if data.get("includeResourceData"):
        if not data.get("encryptionCertificate"):
            raise _validation_error(
                "encryptionCertificate is required when includeResourceData is true."
            )
        raise _validation_error(
            "The Pontis Graph emulator does not deliver encrypted resource data; "
            "create the subscription with includeResourceData false."
        )
    user_id = _authorize(svc, grant, parse_resource(resource))

    for name, url in (
        ("notificationUrl", notification_url),
        ("lifecycleNotificationUrl", lifecycle_url),
    ):
        if url is None:
            continue
        problem = await svc.notifier.validate(url)
        if problem is not None:
            raise _validation_error(
                "Subscription validation request failed. Notification endpoint must respond with "
                f"200 OK to validation request. ({name}: {problem})"
            )

    app = svc.state.apps[grant.client_id]
    sub = Subscription(
        id=new_guid(),
        tenant_id=grant.tenant_id,
        application_id=grant.client_id,
        creator_id=grant.user_id or app.service_principal_id,
        resource=resource,
        change_types=change_types,
        notification_url=notification_url,
        expires=expires,
        client_state=client_state,
        lifecycle_url=lifecycle_url,
        include_resource_data=False,
        latest_tls=str(data.get("latestSupportedTlsVersion") or "v1_2"),
        user_id=user_id,
    )
    svc.state.subscriptions[sub.id] = sub
    return entity(
        request, svc.config.public_url, "subscriptions/$entity", subscription_json(sub), 201
    )


def _own_subscription(request: web.Request) -> tuple[Services, TokenGrant, Subscription]:
    svc = services(request)
    grant = svc.identity.authenticate(request)
    sub = svc.state.subscriptions.get(request.match_info["subscription_id"])
    if sub is None or sub.application_id != grant.client_id or sub.expires <= svc.state.now():
        raise GraphError(404, "ResourceNotFound", "The object was not found.")
    return svc, grant, sub


async def list_subscriptions(request: web.Request) -> web.Response:
    """An app sees the subscriptions it created; a delegated token those of its user."""
    svc = services(request)
    grant = svc.identity.authenticate(request)
    subs = [
        s
        for s in svc.state.live_subscriptions()
        if s.application_id == grant.client_id
        and (grant.user_id is None or s.creator_id == grant.user_id)
    ]
    return json_response(
        {
            "@odata.context": context_url(request, svc.config.public_url, "subscriptions"),
            "value": [subscription_json(s) for s in subs],
        }
    )


async def get_subscription(request: web.Request) -> web.Response:
    svc, _, sub = _own_subscription(request)
    return entity(request, svc.config.public_url, "subscriptions/$entity", subscription_json(sub))


async def patch_subscription(request: web.Request) -> web.Response:
    """Renew (expirationDateTime) or move (notificationUrl, validated again). A renewal also
    counts as reauthorization, so held notifications flow again."""
    svc, _, sub = _own_subscription(request)
    data = await read_json(request)
    if "lifecycleNotificationUrl" in data:
        raise _validation_error(
            "lifecycleNotificationUrl cannot be changed; create a new subscription."
        )
    if "expirationDateTime" in data:
        sub.expires = _check_expiry(svc, data["expirationDateTime"], sub.lifecycle_url is not None)
    if "notificationUrl" in data:
        url = _check_url(svc, "notificationUrl", data["notificationUrl"])
        problem = await svc.notifier.validate(url)
        if problem is not None:
            raise _validation_error(f"Subscription validation request failed. ({problem})")
        sub.notification_url = url
    svc.notifier.resume(sub)
    return entity(request, svc.config.public_url, "subscriptions/$entity", subscription_json(sub))


async def delete_subscription(request: web.Request) -> web.Response:
    svc, _, sub = _own_subscription(request)
    del svc.state.subscriptions[sub.id]
    return web.Response(status=204)


async def reauthorize_subscription(request: web.Request) -> web.Response:
    svc, grant, sub = _own_subscription(request)
    sub.user_id = grant.user_id or sub.user_id
    # Graph extends nothing here; it only lifts the pause reauthorizationRequired caused.
    svc.notifier.resume(sub)
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1.0/subscriptions", list_subscriptions)
    app.router.add_post("/v1.0/subscriptions", create_subscription)
    item = "/v1.0/subscriptions/{subscription_id}"
    app.router.add_get(item, get_subscription)
    app.router.add_patch(item, patch_subscription)
    app.router.add_delete(item, delete_subscription)
    app.router.add_post(item + "/reauthorize", reauthorize_subscription)
