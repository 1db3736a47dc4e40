"""Matrix power levels as XEP-0045 affiliations and roles (the table in docs/xmpp.md).

A Matrix room has one number per user; a MUC has a lasting affiliation and a role for the
visit. The thresholds follow what each can do: ``owner`` configures the room and names admins
(Matrix 100, room admin); ``admin`` bans and grants membership (75, between the two); the ``moderator`` role kicks and removes messages
(50, Matrix's default ``kick``/``ban``/``redact`` level); everyone else is a ``member`` who
speaks (``participant``). Room creators in newer room versions have every power: owners.
"""

from __future__ import annotations

from typing import Any

OWNER_LEVEL = 100
ADMIN_LEVEL = 75
MODERATOR_LEVEL = 50


def level_of(levels: dict[str, Any], mxid: str) -> int:
    """``mxid``'s power level under ``levels`` (an ``m.room.power_levels`` content), as the
    spec reads it; anything malformed counts as the default, or 0."""
    users = levels.get("users")
    value = users.get(mxid) if isinstance(users, dict) else None
    if value is None:
        value = levels.get("users_default", 0)
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def level_for(affiliation: str, role: str) -> int:
    """The Matrix power level of an occupant with ``affiliation`` and ``role`` (the same table
    read the other way)."""
    if affiliation == "owner":
        return OWNER_LEVEL
    if affiliation == "admin":
        return ADMIN_LEVEL
    return MODERATOR_LEVEL if role == "moderator" else 0


def rights_of(levels: dict[str, Any], creators: list[str], mxid: str) -> tuple[str, str]:
    """(affiliation, role) of Matrix member ``mxid`` as occupants of a hosted room see it."""
    level = OWNER_LEVEL if mxid in creators else level_of(levels, mxid)
    affiliation = "owner" if level >= OWNER_LEVEL else "admin" if level >= ADMIN_LEVEL else "member"
    return affiliation, "moderator" if level >= MODERATOR_LEVEL else "participant"
