"""What a configuration may hold: each key checked against the type of its template value, the
core's own rules for the keys a plain type cannot describe, and the problems reported by key
path (:class:`ConfigProblem`), all of them at once (:class:`ConfigError`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from bridge.core.ghost_names import check_templates
from bridge.core.secret_files import is_secret_key as _is_secret_key
from bridge.core.shown import shown

#: Template value of secrets that ``generate-registration`` fills in.
PLACEHOLDER = "generate"
#: Connectors the registration always claims (DESIGN §3), whether or not they are enabled.
BUILTIN_CONNECTORS = ("teams", "xmpp", "email")
PERMISSION_LEVELS = ("relay", "user", "admin")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")

_SERVER_NAME = r"(?:\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9.-]{1,255})(?::[0-9]{1,5})?"
_SERVER_NAME_RE = re.compile(_SERVER_NAME)
_MXID_RE = re.compile(r"@[^:\s]+:" + _SERVER_NAME)
_LOCALPART_RE = re.compile(r"[a-z0-9._=/+-]+")
_CONNECTOR_ID_RE = re.compile(r"[a-z][a-z0-9]*")
_PLAIN_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")
# Mappings whose keys are the operator's data, not fixed config keys: no defaults are merged
# into them and no key is "unknown".
OPEN_MAPPINGS = frozenset({"bridge.permissions", "bridge.agencies"})


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with the configuration, at ``path`` (a key path, or the file's path)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(Exception):
    """The configuration cannot be used. Carries every problem found, not just the first."""

    def __init__(self, problems: Iterable[ConfigProblem]) -> None:
        self.problems: list[ConfigProblem] = list(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(problem) for problem in self.problems)


@dataclass(frozen=True)
class _Rule:
    """A specific check that replaces the plain type check of one key."""

    expected: str
    check: Callable[[Any], bool]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_port(value: Any) -> bool:
    return _is_int(value) and 1 <= value <= 65535


def _is_http_url(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _is_server_name(value: Any) -> bool:
    return isinstance(value, str) and _SERVER_NAME_RE.fullmatch(value) is not None


def split_host_port(value: str) -> tuple[str, int] | None:
    """Split ``host:port`` (or ``[v6]:port``); ``None`` if it is not one."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not _is_port(int(port)):
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        return None
    return (host, int(port)) if host else None


def _non_empty_str(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


CORE_RULES: dict[str, _Rule] = {
    "homeserver.address": _Rule("an http:// or https:// URL", _is_http_url),
    "homeserver.domain": _Rule("a server name such as example.org", _is_server_name),
    "appservice.id": _Rule("a non-empty string", _non_empty_str),
    "appservice.address": _Rule("an http:// or https:// URL", _is_http_url),
    "appservice.hostname": _Rule("a host name or IP address", _non_empty_str),
    "appservice.bot_username": _Rule(
        "a Matrix localpart (lowercase letters, digits and ._=-/+)",
        lambda v: isinstance(v, str) and _LOCALPART_RE.fullmatch(v) is not None,
    ),
    "appservice.as_token": _Rule("a non-empty string", _non_empty_str),
    "appservice.hs_token": _Rule("a non-empty string", _non_empty_str),
    "appservice.max_body_mib": _Rule("an integer of at least 1", lambda v: _is_int(v) and v >= 1),
    "database": _Rule(
        "a database URL starting with sqlite:, postgres:// or postgresql://",
        lambda v: (
            isinstance(v, str)
            and v.startswith(("sqlite:", "postgres://", "postgresql://"))
            and v not in ("sqlite:", "postgres://", "postgresql://")
        ),
    ),
    "bridge.retry.attempts": _Rule("an integer of at least 1", lambda v: _is_int(v) and v >= 1),
    "bridge.retry.backoff_seconds": _Rule(
        "a number of at least 0",
        lambda v: isinstance(v, int | float) and not isinstance(v, bool) and v >= 0,
    ),
    "bridge.retry.max_backoff_seconds": _Rule(
        "a number of at least 0.1",
        lambda v: isinstance(v, int | float) and not isinstance(v, bool) and v >= 0.1,
    ),
    "bridge.queue_size": _Rule("an integer of at least 1", lambda v: _is_int(v) and v >= 1),
    "bridge.command_prefix": _Rule("a non-empty string", _non_empty_str),
    "metrics.listen": _Rule(
        "host:port, such as 127.0.0.1:9103",
        lambda v: isinstance(v, str) and split_host_port(v) is not None,
    ),
    "logging.level": _Rule(
        "one of " + ", ".join(LOG_LEVELS),
        lambda v: isinstance(v, str) and v.upper() in LOG_LEVELS,
    ),
    "logging.format": _Rule("text or json", lambda v: v in LOG_FORMATS),
}
_PORT_RULE = _Rule("an integer from 1 to 65535", _is_port)


def _kind(template_value: Any) -> tuple[str, Callable[[Any], bool]] | None:
    """What the template's value says the user's value must be; ``None``: anything goes."""
    if isinstance(template_value, bool):
        return "true or false", lambda v: isinstance(v, bool)
    if isinstance(template_value, int):
        return "an integer", _is_int
    if isinstance(template_value, float):
        return "a number", lambda v: isinstance(v, int | float) and not isinstance(v, bool)
    if isinstance(template_value, str):
        return "a string", lambda v: isinstance(v, str)
    if isinstance(template_value, list):
        return "a list", lambda v: isinstance(v, list)
    if isinstance(template_value, Mapping):
        return "a mapping", lambda v: isinstance(v, Mapping)
    return None


def placeholder_secrets(section: Any, path: str) -> list[ConfigProblem]:
    """Secrets an enabled connector still has at the template's ``generate`` placeholder."""
    if not isinstance(section, Mapping) or section.get("enabled") is not True:
        return []
    problems: list[ConfigProblem] = []

    def walk(node: Mapping[Any, Any], prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, Mapping):
                walk(value, join_path(prefix, key))
            elif _is_secret_key(str(key)) and value == PLACEHOLDER:
                problems.append(ConfigProblem(join_path(prefix, key), "still the placeholder 'generate'; set the "
                                              "shared secret configured on the other side"))  # fmt: skip

    walk(section, path)
    return problems


def show_value(path: str, value: Any) -> str:
    """The user's value as a problem message may show it: never a secret."""
    return shown(value, secret=_is_secret_key(path.rsplit(".", 1)[-1]))


def join_path(path: str, key: Any) -> str:
    """Key path for messages; keys that are not plain words are quoted (``["example.org"]``)."""
    if isinstance(key, str) and _PLAIN_KEY_RE.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f'{path}["{key}"]' if path else f'["{key}"]'


def check_value(
    value: Any,
    template_value: Any,
    path: str,
    problems: list[ConfigProblem],
    rules: Mapping[str, _Rule],
    skip: Collection[str],
) -> None:
    if path in skip:
        return
    key = path.rsplit(".", 1)[-1]
    rule = rules.get(path)
    if rule is None and key == "port" and _is_int(template_value):
        rule = _PORT_RULE
    if rule is not None:
        if not rule.check(value):
            problems.append(
                ConfigProblem(path, f"expected {rule.expected}, got {show_value(path, value)}")
            )
        return
    kind = _kind(template_value)
    if kind is None:
        return
    expected, matches = kind
    if not matches(value):
        problems.append(ConfigProblem(path, f"expected {expected}, got {show_value(path, value)}"))
        return
    if isinstance(template_value, Mapping) and path not in OPEN_MAPPINGS:
        _check_mapping(value, template_value, path, problems, rules, skip)


def _check_mapping(
    section: Mapping[Any, Any],
    template: Mapping[Any, Any],
    path: str,
    problems: list[ConfigProblem],
    rules: Mapping[str, _Rule],
    skip: Collection[str],
) -> None:
    for key, template_value in template.items():
        key_path = join_path(path, key)
        if key not in section:
            kind = _kind(template_value)
            expected = f"; expected {kind[0]}" if kind else ""
            problems.append(ConfigProblem(key_path, f"missing{expected}"))
        else:
            check_value(section[key], template_value, key_path, problems, rules, skip)
    for key in section:
        if key not in template:
            problems.append(ConfigProblem(join_path(path, key), "unknown key"))


def validate_section(
    section: Mapping[str, Any],
    template: Mapping[str, Any],
    path: str,
    *,
    skip: Collection[str] = (),
) -> list[ConfigProblem]:
    """Check ``section`` (found at key path ``path``) against ``template``.

    Each key's value must have the type of the template's value (a float key also takes an
    integer, an integer key never takes ``true``); keys named ``port`` must be 1-65535; keys
    missing from ``section`` and keys absent from ``template`` are problems. Values of keys
    named like a secret are shown as ``<hidden>``. ``skip`` lists full key paths not to check.
    Connectors use this for their own section; usually via :meth:`Config.validate_connector`.
    """
    problems: list[ConfigProblem] = []
    check_value(section, template, path, problems, {}, skip)
    return problems


def check_permissions(permissions: Any) -> list[ConfigProblem]:
    path = "bridge.permissions"
    if not isinstance(permissions, Mapping):
        return [
            ConfigProblem(
                path,
                "expected a mapping of '*', a server name or a Matrix user id to "
                f"{', '.join(PERMISSION_LEVELS)}; got {show_value(path, permissions)}",
            )
        ]
    problems = []
    for who, level in permissions.items():
        key_path = join_path(path, who)
        if not (
            who == "*" or _is_server_name(who) or (isinstance(who, str) and _MXID_RE.fullmatch(who))
        ):
            problems.append(
                ConfigProblem(
                    key_path,
                    "expected '*', a server name or a Matrix user id (@user:server) as key",
                )
            )
        if level not in PERMISSION_LEVELS:
            expected = ", ".join(PERMISSION_LEVELS)
            problems.append(
                ConfigProblem(
                    key_path, f"expected one of {expected}, got {show_value(key_path, level)}"
                )
            )
    return problems


def check_connectors(connectors: Any, appservice: Any) -> list[ConfigProblem]:
    if not isinstance(connectors, Mapping):
        return [
            ConfigProblem(
                "connectors", f"expected a mapping, got {show_value('connectors', connectors)}"
            )
        ]
    problems = []
    for network, section in connectors.items():
        path = join_path("connectors", network)
        if not isinstance(network, str) or not _CONNECTOR_ID_RE.fullmatch(network):
            problems.append(
                ConfigProblem(path, "expected a connector id of lowercase letters and digits")
            )
        if not isinstance(section, Mapping):
            problems.append(
                ConfigProblem(path, f"expected a mapping, got {show_value(path, section)}")
            )
        elif "enabled" not in section:
            problems.append(ConfigProblem(f"{path}.enabled", "missing; expected true or false"))
        elif not isinstance(section["enabled"], bool):
            given = show_value(f"{path}.enabled", section["enabled"])
            problems.append(
                ConfigProblem(f"{path}.enabled", f"expected true or false, got {given}")
            )
    bot = appservice.get("bot_username") if isinstance(appservice, Mapping) else None
    problems += [ConfigProblem(*p) for p in check_templates(connectors, bot, BUILTIN_CONNECTORS)]
    return problems
