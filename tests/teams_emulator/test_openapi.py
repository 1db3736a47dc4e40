"""Every response and notification of the emulator validates against Microsoft's OpenAPI
description of Graph (the slice committed next to this file; see extract_openapi_slice.py).

One recording drives the emulator through each operation it serves (openapi_check.record);
the tests check that each exchange validates, and that the recording reached every operation
of the slice, so a route added to the emulator cannot go unchecked.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.teams_emulator.extract_openapi_slice import (
    METHODS,
    SLICE,
    emulator_operations,
    operations,
)
from tests.teams_emulator.openapi_check import check, record


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return dict(json.loads(Path(SLICE).read_text()))


@pytest.fixture(scope="module")
async def recorded() -> dict[str, Any]:
    return await record()


def _operations(spec: dict[str, Any]) -> dict[tuple[str, str], re.Pattern[str]]:
    """(METHOD, path template) of each operation → a pattern matching its concrete paths."""
    out = {}
    for path, item in spec["paths"].items():
        parts = re.split(r"(\{[^}]*\})", path)
        regex = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
        # Graph accepts functions with or without "()".
        regex = regex.replace(re.escape("()"), r"(?:\(\))?")
        regex = regex.replace(re.escape("getAllMessages"), r"getAllMessages(?:\(\))?")
        for method in METHODS:
            if method in item:
                out[(method.upper(), path)] = re.compile(f"^{regex}$")
    return out


def test_every_recorded_response_and_notification_validates(
    spec: dict[str, Any], recorded: dict[str, Any]
) -> None:
    results = check(spec, recorded)
    failures = [f"{label}: {'; '.join(problems[:4])}" for label, problems in results if problems]
    assert not failures, "\n".join(failures)
    kinds = {label for label, _ in results if label.startswith("notification")}
    assert {
        "notification (created)",
        "notification (updated)",
        "notification (deleted)",
        "notification (lifecycle)",
    } <= kinds


def test_the_recording_reaches_every_operation_of_the_slice(
    spec: dict[str, Any], recorded: dict[str, Any]
) -> None:
    operations = _operations(spec)
    reached = {
        op
        for ex in recorded["exchanges"]
        if ex["status"] < 400
        for op, pattern in operations.items()
        if op[0] == ex["method"] and pattern.match(ex["path"])
    }
    missing = sorted(f"{m} {p}" for m, p in set(operations) - reached)
    assert not missing, "not exercised:\n" + "\n".join(missing)


def test_the_slice_holds_every_operation_the_emulator_serves_that_graph_describes(
    spec: dict[str, Any],
) -> None:
    """A route added to the emulator must be cut into the slice again (run the extractor),
    or it would be served without ever being checked."""
    full_like = {(m, re.sub(r"\{[^}]*\}", "{}", p.replace("()", ""))) for m, p in _keys(spec)}
    served = {(m, p.replace("()", "")) for m, p in emulator_operations()}
    # Served routes Graph does not describe at all (documented in the extractor's output):
    # /me/chats/{id}/…, the hostedContents lists of user-chat and channel messages, and
    # adding a member through /users/{id}/chats/{id}/members.
    undescribed = {
        (m, p)
        for m, p in served
        if p.startswith("/me/chats/")
        or (m == "get" and p.endswith("/{}/hostedContents"))
        or (m, p) == ("post", "/users/{}/chats/{}/members")
    }
    assert served - undescribed <= full_like | {("get", "/chats/{}/messages/{}/hostedContents")}


def test_the_slice_says_truthfully_what_it_holds(spec: dict[str, Any]) -> None:
    """``info`` claims no operation, path or schema the slice lacks, and names exactly the
    served routes left unvalidated, so a stale or hand-edited slice is caught."""
    held = set(operations(spec))
    subset, note = spec["info"]["x-subset"], spec["info"]["x-slice"]
    for extension in subset["extensions"]:
        assert set(extension["operationsAdded"]) <= held, extension["date"]
        assert not set(extension.get("operationsNotInThisSlice", [])) & held
        for component in extension["componentsAdded"]:
            kind, _, name = component.partition("/")
            assert name in spec["components"][kind]
    assert set(subset["transformations"]["derivedPaths"]) <= set(spec["paths"])
    assert set(subset["transformations"]["schemasAddedFromCsdl"]) <= set(
        spec["components"]["schemas"]
    )
    assert not held & set(note["sourceOperationsNotServed"])
    # Every path item was cut from the source, which records where each came from.
    assert all(
        "x-subset-source" in item or "x-subset-derived-from" in item
        for item in spec["paths"].values()
    )
    for base, subtypes in subset["odataTypeHierarchies"].items():
        assert {base, *subtypes} <= set(spec["components"]["schemas"])
    described = {_bare(re.sub(r"\{[^}]*\}", "{}", op)) for op in held}
    served = {f"{m.upper()} {p}" for m, p in emulator_operations()}
    assert {op for op in served if _bare(op) not in described} == set(note["servedNotInSource"])


def _bare(operation: str) -> tuple[str, str]:
    method, path = operation.split(" ", 1)
    return method.lower(), path.replace("()", "")


def _keys(spec: dict[str, Any]) -> list[tuple[str, str]]:
    return [(m, p) for p, item in spec["paths"].items() for m in METHODS if m in item]


def test_a_response_graph_would_not_send_fails_the_check(
    spec: dict[str, Any], recorded: dict[str, Any]
) -> None:
    """The check can fail: a message with a wrong ``messageType`` and a notification without
    its ``value`` list are reported."""
    exchange = next(
        ex
        for ex in recorded["exchanges"]
        if ex["method"] == "GET" and re.fullmatch(r"/chats/[^/]+/messages/\d+", ex["path"])
    )
    broken = {**json.loads(exchange["body"]), "messageType": 42}
    forged = {
        "exchanges": [{**exchange, "body": json.dumps(broken)}],
        "notifications": [{"value": "not a list"}],
    }
    results = check(spec, forged)
    assert [bool(problems) for _, problems in results] == [True, True]


def test_a_member_is_checked_as_the_type_it_names(
    spec: dict[str, Any], recorded: dict[str, Any]
) -> None:
    """``conversationMember`` has no ``userId``; the ``aadUserConversationMember`` a member says
    it is has, as a string, so a member with a numeric ``userId`` fails the check."""
    exchange = next(
        ex
        for ex in recorded["exchanges"]
        if ex["method"] == "GET" and re.fullmatch(r"/chats/[^/]+/members", ex["path"])
    )
    body = json.loads(exchange["body"])
    assert body["value"][0]["@odata.type"] == "#microsoft.graph.aadUserConversationMember"
    body["value"][0]["userId"] = 42
    results = check(
        spec, {"exchanges": [{**exchange, "body": json.dumps(body)}], "notifications": []}
    )
    [(_, problems)] = results
    assert any("/value/0 (microsoft.graph.aadUserConversationMember)" in p for p in problems)
