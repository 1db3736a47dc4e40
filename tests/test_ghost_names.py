"""``connectors.<network>.ghost_username_template``: two hubs on one homeserver, each with its own
ghost names (DESIGN §3's ``<network>_{id}`` stays the default)."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any
from unittest.mock import AsyncMock, MagicMock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.core.config import Config, ConfigError, make_registration, write_registration
from bridge.core.events import UserInfo
from bridge.core.federation import FederationPolicy
from bridge.core.ghost_names import GhostNames
from bridge.core.ids import NetworkID, RemoteUserID
from bridge.core.metrics import Metrics
from bridge.core.permissions import Permissions
from bridge.core.portals import PortalManager
from bridge.core.registration_check import check_registration
from bridge.core.retry import RetryPolicy
from bridge.core.router import Router
from bridge.portal.store import Store
from bridge.xmpp.config import EXAMPLE_CONFIG as XMPP_EXAMPLE
from tests.config_text import BASE_CONFIG

pytestmark = pytest.mark.usefixtures("no_pontis_env")

XMPP, EMAIL = NetworkID("xmpp"), NetworkID("email")
ALICE = RemoteUserID("alice@xmpp.example")
KEY = "connectors.xmpp.ghost_username_template"


def _load(tmp_path: Path, connectors: str, appservice: str = "") -> Config:
    path = tmp_path / "config.yaml"
    path.write_text(BASE_CONFIG + appservice + "connectors:\n" + connectors)
    return Config.load(path, environ={})


def _problems(tmp_path: Path, connectors: str, appservice: str = "") -> list[str]:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, connectors, appservice)
    return [str(problem) for problem in caught.value.problems]


def _xmpp(template: str) -> str:
    return f"  xmpp:\n    enabled: true\n    ghost_username_template: {template}\n"


# --- refused at config load, naming the key ---------------------------------------------------


@pytest.mark.parametrize(
    ("template", "why"),
    [
        ("hubb_xmpp", "expected {id} exactly once"),
        ("'{id}_{id}'", "expected {id} exactly once"),
        ("'{ID}_xmpp'", "expected {id} exactly once"),
        ("'Hubb_{id}'", "expected only lowercase letters, digits and ._=-/+ besides {id}"),
        ("'hub b_{id}'", "expected only lowercase letters, digits and ._=-/+ besides {id}"),
        ("'hub:b_{id}'", "expected only lowercase letters, digits and ._=-/+ besides {id}"),
        ("'{name}_{id}'", "expected only lowercase letters, digits and ._=-/+ besides {id}"),
        ("'{id}'", "{id} alone would claim every user of the homeserver"),
        ("42", "expected a string such as 'hubb_xmpp_{id}', got 42"),
        ("null", "expected a string such as 'hubb_xmpp_{id}', got nothing (null)"),
        ("[a, b]", "expected a string such as 'hubb_xmpp_{id}', got a list"),
    ],
)
def test_an_invalid_template_is_refused_with_its_key_path(
    tmp_path: Path, template: str, why: str
) -> None:
    [problem] = _problems(tmp_path, _xmpp(template))
    assert problem.startswith(f"{KEY}: ") and why in problem, problem


def test_a_huge_template_is_refused_and_shown_shortened(tmp_path: Path) -> None:
    [problem] = _problems(tmp_path, _xmpp("'" + "x" * 100_000 + "'"))
    assert problem.startswith(f"{KEY}: expected {{id}} exactly once") and len(problem) < 400


@pytest.mark.parametrize(
    ("connectors", "path", "other"),
    [
        # hub-side text that can produce the built-in email's default names, section or not
        (_xmpp("'email_x{id}'"), KEY, "connectors.email.ghost_username_template ('email_{id}')"),
        # a suffix template against a prefix template: "xmpp_" + id and id + "_z" meet
        (_xmpp("'{id}_z'"), KEY, "connectors.teams.ghost_username_template ('teams_{id}')"),
        # two custom ones, the later is named
        (
            _xmpp("'hub_{id}'")
            + "  email:\n    enabled: false\n    ghost_username_template: 'hub_m{id}'\n",
            "connectors.email.ghost_username_template",
            "connectors.xmpp.ghost_username_template ('hub_{id}')",
        ),
        # a third-party connector's default counts too
        (
            _xmpp("'reference_{id}.x'") + "  reference:\n    enabled: false\n",
            KEY,  # the key set is named, not the default it meets
            "connectors.reference.ghost_username_template ('reference_{id}')",
        ),
    ],
)
def test_templates_that_share_names_are_refused(
    tmp_path: Path, connectors: str, path: str, other: str
) -> None:
    problems = _problems(tmp_path, connectors)
    assert any(p.startswith(f"{path}: overlaps {other}: both would name @") for p in problems), (
        problems
    )


def test_a_template_that_names_the_bot_is_refused(tmp_path: Path) -> None:
    [problem] = _problems(tmp_path, _xmpp("'hub{id}'"), "  bot_username: hubbot\n")
    assert problem == (
        f"{KEY}: would name the bridge bot (appservice.bot_username is 'hubbot'); "
        "change one of them"
    )
    # the default template can name the bot as well
    [problem] = _problems(tmp_path, "  xmpp:\n    enabled: true\n", "  bot_username: xmpp_bot\n")
    assert problem.startswith(f"{KEY}: would name the bridge bot")


def test_an_invalid_template_of_a_disabled_connector_is_refused_too(tmp_path: Path) -> None:
    """The registration claims the built-in connectors' names even when they are disabled."""
    connectors = "  teams:\n    enabled: false\n    ghost_username_template: teams\n"
    [problem] = _problems(tmp_path, connectors)
    assert problem.startswith("connectors.teams.ghost_username_template: expected {id}")


def test_the_key_is_accepted_in_every_connector_section(tmp_path: Path) -> None:
    secret = "    component:\n      secret: s3cret\n"
    config = _load(tmp_path, _xmpp("'hubb_xmpp_{id}'") + secret)
    assert config.validate_connector("xmpp", XMPP_EXAMPLE) == []
    config = _load(tmp_path, "  xmpp:\n    enabled: true\n" + secret)  # and optional
    assert config.validate_connector("xmpp", XMPP_EXAMPLE) == []


# --- the names ----------------------------------------------------------------------------------


def test_a_custom_template_names_parses_and_keeps_to_its_own_ghosts(tmp_path: Path) -> None:
    names = GhostNames.from_config(_load(tmp_path, _xmpp("'hubb_xmpp_{id}'")))
    assert names.localpart(XMPP, ALICE) == "hubb_xmpp_alice=40xmpp.example"
    assert names.mxid(XMPP, ALICE) == "@hubb_xmpp_alice=40xmpp.example:hub.test"
    assert names.parse(XMPP, "@hubb_xmpp_alice=40xmpp.example:hub.test") == ALICE
    for not_ours in (
        "@xmpp_alice=40xmpp.example:hub.test",  # the default name: another hub's ghost
        "@hubc_xmpp_alice=40xmpp.example:hub.test",  # a third hub's
        "@hubb_xmpp_alice=40xmpp.example:other.test",  # another homeserver
        "@hubb_email_alice=40xmpp.example:hub.test",
        "@hubb_xmpp_:hub.test",  # no id
        "@hubb_xmpp_bad=zz:hub.test",  # a bad escape
        "@hubb_xmpp_=61lice=40xmpp.example:hub.test",  # a needless escape: a second name
        "@hubb_xmpp_Alice=40xmpp.example:hub.test",  # upper case is never written
        "@hubb_xmpp_a:b:hub.test",
        "hubb_xmpp_alice:hub.test",
    ):
        assert names.parse(XMPP, not_ours) is None, not_ours
    assert names.owns(XMPP, "@hubb_xmpp_bad=zz:hub.test")
    assert not names.owns(XMPP, "@xmpp_alice=40xmpp.example:hub.test")
    # the other connectors keep their defaults
    assert names.mxid(EMAIL, RemoteUserID("bob@example.org")) == "@email_bob=40example.org:hub.test"
    assert names.parse(EMAIL, "@hubb_xmpp_alice=40xmpp.example:hub.test") is None


def test_a_suffix_template_round_trips() -> None:
    names = GhostNames("hub.test", {"xmpp": "{id}.xmpp.hubb"})
    assert names.mxid(XMPP, ALICE) == "@alice=40xmpp.example.xmpp.hubb:hub.test"
    assert names.parse(XMPP, "@alice=40xmpp.example.xmpp.hubb:hub.test") == ALICE
    assert names.parse(XMPP, "@.xmpp.hubb:hub.test") is None
    assert names.parse(XMPP, "@xmpp.hubb:hub.test") is None  # shorter than the fixed text


@given(st.text(min_size=1), st.sampled_from(["xmpp_{id}", "hubb_xmpp_{id}", "h+{id}=.x/"]))
def test_every_template_round_trips_up_to_case(value: str, template: str) -> None:
    names = GhostNames("hub.test", {"xmpp": template})
    mxid = names.mxid(XMPP, RemoteUserID(value))
    assert names.parse(XMPP, mxid) == value.lower()
    assert re.fullmatch(names.regex(XMPP), mxid)


def test_a_bad_template_cannot_build_names() -> None:
    with pytest.raises(ValueError, match="exactly once"):
        GhostNames("hub.test", {"xmpp": "xmpp_"})


# --- the registration claims exactly these names -------------------------------------------------


def test_the_registration_claims_the_templates_names_and_no_others(tmp_path: Path) -> None:
    config = _load(tmp_path, _xmpp("'hubb_xmpp_{id}'"))
    users = make_registration(config, config.enabled_connectors())["namespaces"]["users"]
    assert all(namespace["exclusive"] for namespace in users)

    def claimed(mxid: str) -> bool:
        return any(re.match(namespace["regex"], mxid) for namespace in users)  # as Synapse

    names = GhostNames.from_config(config)
    assert claimed(names.mxid(XMPP, ALICE))
    assert claimed("@email_bob=40example.org:hub.test") and claimed("@pontis:hub.test")
    for mxid in (
        "@xmpp_alice=40xmpp.example:hub.test",  # hub A's ghost is left to hub A
        "@hubb_xmpp_alice:other.test",
        "@hubb_xmpp_alice:hub.test.evil",
        "@xhubb_xmpp_alice:hub.test",
    ):
        assert not claimed(mxid), mxid


def test_pontis_check_sees_a_registration_written_before_the_template_changed(
    tmp_path: Path,
) -> None:
    before = _load(tmp_path, "  xmpp:\n    enabled: true\n")
    path = tmp_path / "registration.yaml"
    write_registration(path, make_registration(before, before.enabled_connectors()))
    assert check_registration(before, path) == []
    after = _load(tmp_path, _xmpp("'hubb_xmpp_{id}'"))
    [line] = check_registration(after, path)
    assert "namespaces.users does not claim @hubb_xmpp_example:hub.test" in line
    write_registration(path, make_registration(after, after.enabled_connectors()))
    assert check_registration(after, path) == []


def test_the_default_registration_is_unchanged(tmp_path: Path) -> None:
    config = _load(tmp_path, "  xmpp:\n    enabled: true\n")
    users = make_registration(config, ["xmpp", "reference"])["namespaces"]["users"]
    assert [u["regex"] for u in users] == [
        r"^@pontis:hub\.test$",
        r"^@teams_.*:hub\.test$",
        r"^@xmpp_.*:hub\.test$",
        r"^@email_.*:hub\.test$",
        r"^@reference_.*:hub\.test$",
    ]


# --- the core uses the one object it is given ------------------------------------------------------


async def test_the_core_makes_and_recognises_ghosts_by_the_template(store: Store) -> None:
    names = GhostNames("hub.test", {"xmpp": "hubb_xmpp_{id}"})
    matrix: Any = MagicMock(bot_mxid="@pontis:hub.test", ensure_registered=AsyncMock())
    matrix.set_profile = AsyncMock()
    log = logging.getLogger("test.ghost_names")
    portals = PortalManager(
        store=store, matrix=matrix, domain="hub.test", bridge_id="pontis", networks={}, log=log,
        ghost_names=names,
    )  # fmt: skip
    router = Router(
        store=store, matrix=matrix, portals=portals, connectors={XMPP: MagicMock()},
        permissions=Permissions({"*": "user"}, relay_enabled=False), metrics=Metrics(),
        retry=RetryPolicy(attempts=1, backoff=0), queue_size=10, domain="hub.test", log=log,
        federation=FederationPolicy(None, "hub.test"),
    )  # fmt: skip
    ghost = await portals.ensure_ghost(XMPP, ALICE, MagicMock(), UserInfo(name="Alice"))
    assert ghost.mxid == "@hubb_xmpp_alice=40xmpp.example:hub.test"
    matrix.ensure_registered.assert_awaited_once_with(ghost.mxid)
    assert (await store.get_ghost(XMPP, ALICE)).mxid == ghost.mxid  # type: ignore[union-attr]
    assert router.is_any_puppet(ghost.mxid)
    # another hub's ghost on the same homeserver is a Matrix user to this hub
    assert not router.is_any_puppet("@xmpp_alice=40xmpp.example:hub.test")
    invite = {"type": "m.room.member", "content": {"membership": "invite"}}
    assert router._invited_ghost(XMPP, invite | {"state_key": ghost.mxid}) == ALICE
    other = invite | {"state_key": "@xmpp_alice=40xmpp.example:hub.test"}
    assert router._invited_ghost(XMPP, other) is None
