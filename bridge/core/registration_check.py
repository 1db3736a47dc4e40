"""``pontis check``: does the registration file the homeserver loads still fit the config?

The first-run trap: ``scripts/run.sh`` writes the registration from the unedited config template;
the operator then sets the real domain and address in the config, and the homeserver keeps the
old file. Nothing works, yet each file looks fine on its own. Here the file on disk is compared
with what ``generate-registration`` would write now (:func:`bridge.core.config.make_registration`),
one line per difference, each saying how to regenerate it. Tokens are compared, never shown.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from bridge.core.config import Config, make_registration

_SECRETS = ("as_token", "hs_token")
_CONFIG_KEY = {
    "id": "appservice.id",
    "url": "appservice.address",
    "as_token": "appservice.as_token",
    "hs_token": "appservice.hs_token",
    "sender_localpart": "appservice.bot_username",
}


def check_registration(config: Config, path: str | Path) -> list[str]:
    """One line per way the registration at ``path`` differs from what ``config`` needs; none
    if it fits. A missing or unreadable file is one line too."""
    path = Path(path)
    fix = _fix(config, path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return [f"registration: {path} does not exist; write it with {fix}"]
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        return [f"registration: cannot read {path}: {reason}"]
    try:
        found = YAML(typ="safe", pure=True).load(text)
    except YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        return [f"registration: {path} is not valid YAML{where}; write it again with {fix}"]
    if not isinstance(found, Mapping):
        return [f"registration: {path} is not a registration (no keys); write it with {fix}"]
    expected = make_registration(config, config.enabled_connectors())
    problems = [*_fields(found, expected), *_namespaces(found, expected), *_flags(found, expected)]
    return [f"registration: {path}: {problem}; regenerate it with {fix}" for problem in problems]


def _fix(config: Config, path: Path) -> str:
    command = ["pontis", "-c", str(config.path), "generate-registration", "-r", str(path)]
    return f"`{shlex.join(command)}` and restart the homeserver"


def _fields(found: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    problems = []
    for key, config_key in _CONFIG_KEY.items():
        have, want = found.get(key), expected[key]
        if have == want:
            continue
        if key in _SECRETS:
            what = "is missing" if not have else f"differs from {config_key} in the config"
            problems.append(f"{key} {what}")
        elif have is None:
            problems.append(f"{key} is missing ({config_key} is {want!r})")
        else:
            problems.append(f"{key} is {have!r} but {config_key} is {want!r}")
    return problems


def _namespaces(found: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    """Every user and alias the bridge needs is claimed, exclusively, by some regex in the file
    (tried as the homeserver does, on an example id), however the regex is written."""
    problems = []
    namespaces = found.get("namespaces")
    if not isinstance(namespaces, Mapping):
        namespaces = {}
    for kind, what in (("users", "user"), ("aliases", "alias")):
        entries = namespaces.get(kind)
        entries = entries if isinstance(entries, list) else []
        for wanted in expected["namespaces"][kind]:
            example = _example(wanted["regex"])
            claims = [e for e in entries if isinstance(e, Mapping) and _matches(e, example)]
            if not claims:
                problems.append(
                    f"namespaces.{kind} does not claim {example} ({what} regex {wanted['regex']})"
                )
            elif not any(entry.get("exclusive") is True for entry in claims):
                problems.append(f"namespaces.{kind} claims {example} but not exclusively")
    return problems


def _flags(found: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    """The other keys (ephemeral events, the MSCs encryption needs, rate limiting) as written."""
    problems = []
    for key, want in expected.items():
        if key in _CONFIG_KEY or key == "namespaces" or found.get(key) == want:
            continue
        need = "encryption.allow needs it" if key.startswith(("org.matrix", "io.element")) else ""
        have = "missing" if key not in found else repr(found[key])
        problems.append(f"{key} is {have}, not {want!r}" + (f" ({need})" if need else ""))
    return problems


def _example(regex: str) -> str:
    """An id the anchored regex ``make_registration`` writes matches: ``^@xmpp_.*:hub\\.test$``
    gives ``@xmpp_example:hub.test``."""
    body = regex.removeprefix("^").removesuffix("$").replace(".*", "example")
    return re.sub(r"\\(.)", r"\1", body)


def _matches(entry: Mapping[str, Any], example: str) -> bool:
    regex = entry.get("regex")
    if not isinstance(regex, str):
        return False
    try:
        return re.match(regex, example) is not None  # Synapse matches from the start
    except re.error:
        return False
