"""The bridge's configuration: loading, defaults, environment overrides and validation.

``bridge/example-config.yaml`` (shipped as package data; ``config.example.yaml`` at the repository
root links to it) is the single source of truth. A user's file is loaded in ruamel.yaml's
round-trip mode so that :meth:`Config.save` keeps their comments and key order; keys the user
left out are merged in from the template, so new keys appear by themselves. Every key's expected
type is the type of its template value.

Environment variables ``PONTIS_<PATH>`` override keys for this process only: they are applied to
a copy used for reading and never reach the file on :meth:`Config.save`.

Connectors validate the rest of their own section with :meth:`Config.validate_connector` (or
:func:`validate_section`) against their own example fragment; the core checks only
``connectors.<id>.enabled``.
"""

from __future__ import annotations

import copy
import importlib.resources
import io
import os
import re
import secrets
import tempfile
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from bridge.core.agencies import check_agencies
from bridge.core.encryption_settings import PICKLE_KEY_ENV, EncryptionSettings
from bridge.core.encryption_settings import check_section as _check_encryption
from bridge.core.federation import check_rules
from bridge.core.ghost_names import TEMPLATE_KEY, GhostNames, check_templates
from bridge.core.secret_files import FILE_SUFFIX, resolve_secret_files
from bridge.core.secret_files import is_secret_key as _is_secret_key
from bridge.core.shown import shown

__all__ = [
    "ENV_PREFIX",
    "PLACEHOLDER",
    "Config",
    "ConfigError",
    "ConfigProblem",
    "load_template",
    "make_registration",
    "split_host_port",
    "validate_section",
    "write_registration",
]

ENV_PREFIX = "PONTIS_"
#: Template value of secrets that ``generate-registration`` fills in.
PLACEHOLDER = "generate"
NOT_CONFIG_ENV = frozenset({PICKLE_KEY_ENV})
"""``PONTIS_*`` variables that are not config overrides (the pickle key itself)."""
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
_URL_PASSWORD_VALUE_RE = re.compile(r"://[^:/@\s]*:([^@\s]+)@")
_PLAIN_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")
# Mappings whose keys are the operator's data, not fixed config keys: no defaults are merged
# into them and no key is "unknown".
_OPEN_MAPPINGS = frozenset({"bridge.permissions", "bridge.agencies"})


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


# ---------------------------------------------------------------------------------------------
# Validation against a template


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


_CORE_RULES: dict[str, _Rule] = {
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


def _placeholder_secrets(section: Any, path: str) -> list[ConfigProblem]:
    """Secrets an enabled connector still has at the template's ``generate`` placeholder."""
    if not isinstance(section, Mapping) or section.get("enabled") is not True:
        return []
    problems: list[ConfigProblem] = []

    def walk(node: Mapping[Any, Any], prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, Mapping):
                walk(value, _join(prefix, key))
            elif _is_secret_key(str(key)) and value == PLACEHOLDER:
                problems.append(ConfigProblem(_join(prefix, key), "still the placeholder 'generate'; set the "
                                              "shared secret configured on the other side"))  # fmt: skip

    walk(section, path)
    return problems


def _show(path: str, value: Any) -> str:
    """The user's value as a problem message may show it: never a secret."""
    return shown(value, secret=_is_secret_key(path.rsplit(".", 1)[-1]))


def _join(path: str, key: Any) -> str:
    """Key path for messages; keys that are not plain words are quoted (``["example.org"]``)."""
    if isinstance(key, str) and _PLAIN_KEY_RE.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f'{path}["{key}"]' if path else f'["{key}"]'


def _check(
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
                ConfigProblem(path, f"expected {rule.expected}, got {_show(path, value)}")
            )
        return
    kind = _kind(template_value)
    if kind is None:
        return
    expected, matches = kind
    if not matches(value):
        problems.append(ConfigProblem(path, f"expected {expected}, got {_show(path, value)}"))
        return
    if isinstance(template_value, Mapping) and path not in _OPEN_MAPPINGS:
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
        key_path = _join(path, key)
        if key not in section:
            kind = _kind(template_value)
            expected = f"; expected {kind[0]}" if kind else ""
            problems.append(ConfigProblem(key_path, f"missing{expected}"))
        else:
            _check(section[key], template_value, key_path, problems, rules, skip)
    for key in section:
        if key not in template:
            problems.append(ConfigProblem(_join(path, key), "unknown key"))


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
    _check(section, template, path, problems, {}, skip)
    return problems


# ---------------------------------------------------------------------------------------------
# YAML helpers


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096
    return yaml


@cache
def _template_text() -> str:
    return importlib.resources.files("bridge").joinpath("example-config.yaml").read_text("utf-8")


def load_template() -> CommentedMap:
    """A fresh, modifiable copy of the packaged config template."""
    data = _yaml().load(_template_text())
    assert isinstance(data, CommentedMap)
    return data


def _merge_defaults(target: CommentedMap, defaults: Mapping[Any, Any], path: str = "") -> bool:
    """Add the keys of ``defaults`` missing from ``target``, recursively; user values win.

    A new key goes after the nearest key that precedes it in ``defaults``, so merged files keep
    the template's order. Returns whether anything was added.
    """
    changed = False
    for index, (key, default) in enumerate(defaults.items()):
        key_path = _join(path, key)
        if key not in target:
            position = 0
            for previous in reversed(list(defaults)[:index]):
                if previous in target:
                    position = list(target).index(previous) + 1
                    break
            target.insert(position, key, _uncommented(default))
            if position:
                _move_trailing_comment(target, list(target)[position - 1], key)
            changed = True
        elif (
            isinstance(default, Mapping)
            and isinstance(target[key], CommentedMap)
            and key_path not in _OPEN_MAPPINGS
        ):
            changed |= _merge_defaults(target[key], default, key_path)
    return changed


def _uncommented(value: Any) -> Any:
    """A copy of a template value without the template's comments.

    Copied comments would keep the template's columns (wrong in a file indented differently)
    and ruamel attaches the comment above a key to the value before it, so they would land in
    the wrong place; the documented template stays available as config.example.yaml.
    """
    if isinstance(value, Mapping):
        return CommentedMap((key, _uncommented(item)) for key, item in value.items())
    if isinstance(value, list):
        return CommentedSeq(_uncommented(item) for item in value)
    return value


def _last_leaf(mapping: CommentedMap, key: Any) -> tuple[CommentedMap, Any]:
    """The mapping and key whose comment slot holds the lines printed after ``mapping[key]``."""
    value = mapping[key]
    if isinstance(value, CommentedMap) and value:
        return _last_leaf(value, list(value)[-1])
    return mapping, key


def _move_trailing_comment(mapping: CommentedMap, before: Any, inserted: Any) -> None:
    """Keep the user's comment lines above the key they precede when a key is inserted.

    ruamel stores the comment lines between two keys with the value before them, so a key
    inserted after ``before`` would otherwise come after the comment meant for the next key.
    """
    owner, leaf = _last_leaf(mapping, before)
    if isinstance(owner[leaf], CommentedSeq):
        return  # comments after a sequence live in its items; rare in config files, left alone
    entry = owner.ca.items.get(leaf)
    if not entry or len(entry) < 3 or entry[2] is None or not hasattr(entry[2], "value"):
        return
    token = entry[2]
    text: str = token.value
    if text.startswith("#"):  # the first line is an end-of-line comment; it stays
        end_of_line, _, following = text.partition("\n")
        keep = end_of_line + "\n"
    else:
        keep, following = "", text.removeprefix("\n")
    if not following:
        return
    moved = copy.copy(token)
    moved.value = "\n" + following
    if keep:
        token.value = keep
    else:
        entry[2] = None
    new_owner, new_leaf = _last_leaf(mapping, inserted)
    new_owner.ca.items.setdefault(new_leaf, [None, None, None, None])[2] = moved


def _plain(value: Any) -> Any:
    """ruamel's commented containers and scalar subclasses as plain Python values."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, bool) or value is None:
        return value
    for plain_type in (int, float, str):
        if isinstance(value, plain_type):
            return plain_type(value)
    return value


def _guess_indent(text: str) -> tuple[int, int]:
    """Mapping indent and sequence dash offset of a YAML text, to save it in the same style."""
    indents: list[int] = []
    offset: int | None = None
    previous_key_indent: int | None = None
    for line in text.splitlines():
        stripped = line.lstrip(" ")
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(line) - len(stripped)
        if stripped.startswith("- "):
            if offset is None and previous_key_indent is not None:
                offset = max(indent - previous_key_indent, 0)
        elif indent:
            indents.append(indent)
        previous_key_indent = indent if stripped.rstrip().endswith(":") else None
    mapping = min(indents) if indents else 4
    return mapping, mapping if offset is None else offset


def _atomic_write(path: Path, text: str) -> None:
    """Replace ``path`` (through symlinks) with ``text`` so readers never see half a file.

    Blocking; called from the CLI before the event loop runs.
    """
    target = Path(os.path.realpath(path))
    try:  # it holds secrets: 0600 when new; an existing file keeps its mode, but not for others
        mode = target.stat().st_mode & 0o770
    except FileNotFoundError:
        mode = 0o600
    fd, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp_name, mode)
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------------------
# Environment overrides


def _resolve_env(node: Any, rest: str) -> list[Any] | None:
    """Key path named by ``rest`` (``APPSERVICE_BOT_USERNAME``) in ``node``, longest keys first;
    list items by index (``CONNECTORS_TEAMS_TENANTS_0_CLIENT_SECRET``)."""
    if isinstance(node, list):
        index, _, tail = rest.partition("_")
        if not index.isdigit() or int(index) >= len(node):
            return None
        if not tail:
            return [int(index)]
        found = _resolve_env(node[int(index)], tail)
        return None if found is None else [int(index), *found]
    if not isinstance(node, Mapping):
        return None
    keys = sorted((key for key in node if isinstance(key, str)), key=len, reverse=True)
    for key in keys:
        name = key.upper()
        if rest == name:
            return [key]
        if rest.startswith(name + "_"):
            found = _resolve_env(node[key], rest[len(name) + 1 :])
            if found is not None:
                return [key, *found]
    return None


def _lookup(tree: Any, path: Iterable[str], default: Any) -> Any:
    for key in path:
        if not isinstance(tree, Mapping) or key not in tree:
            return default
        tree = tree[key]
    return tree


def _parse_env_value(raw: str, like: Any) -> Any:
    """An environment value typed like YAML, except that string keys always get the raw text.

    ``like`` is the template's value for the key (or the current value for keys outside it).
    """
    current = like
    if isinstance(current, str):
        return raw
    try:
        value = YAML(typ="safe").load(raw)
    except YAMLError:
        return raw
    if isinstance(value, dict | list) and not isinstance(current, Mapping | list):
        return raw
    return value


# ---------------------------------------------------------------------------------------------
# Config


class Config:
    """The loaded configuration. Build it with :meth:`Config.load`.

    Read it through the typed properties, :meth:`section` or ``config["homeserver"]["address"]``;
    what you read includes environment overrides. Treat returned mappings as read-only.
    """

    def __init__(self, data: CommentedMap, path: Path, environ: Mapping[str, str]) -> None:
        self.path = path
        self._data = data  # what save() writes: the user's file plus merged defaults
        self._env = {
            k: v for k, v in environ.items() if k.startswith(ENV_PREFIX) and k not in NOT_CONFIG_ENV
        }
        self._indent = (4, 4)
        self._effective: CommentedMap = data
        self._env_problems: list[ConfigProblem] = []
        self._pending_env: dict[str, list[str]] = {}  # connector id → unresolved variables
        # Says which type an environment value should get: the template, plus the examples
        # of connectors that validate_connector() merged in.
        self._types = load_template()
        self._rebuild()

    @classmethod
    def load(
        cls,
        path: str | Path,
        environ: Mapping[str, str] | None = None,
        *,
        require_tokens: bool = True,
    ) -> Config:
        """Load, merge template defaults, apply ``PONTIS_*`` overrides and validate.

        ``environ`` defaults to ``os.environ``. ``require_tokens=False`` accepts the ``generate``
        token placeholder (for ``generate-registration``). Raises :class:`ConfigError` listing
        every problem found.
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError([ConfigProblem(str(path), "file not found")]) from None
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(
                [ConfigProblem(str(path), f"cannot read the file: {error}")]
            ) from None
        try:
            data = _yaml().load(text)
        except MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            what = error.problem or error.context or "syntax error"
            raise ConfigError([ConfigProblem(str(path), f"invalid YAML{where}: {what}")]) from None
        except YAMLError as error:
            raise ConfigError([ConfigProblem(str(path), f"invalid YAML: {error}")]) from None
        if not isinstance(data, CommentedMap):
            found = "an empty file" if data is None else _show("", data)
            raise ConfigError(
                [
                    ConfigProblem(
                        str(path),
                        f"expected a mapping of settings at the top level, got {found}; "
                        "start from config.example.yaml",
                    )
                ]
            )
        _merge_defaults(data, load_template())
        config = cls(data, path, os.environ if environ is None else environ)
        config._indent = _guess_indent(text)
        problems = config._env_problems + config.validate(require_tokens=require_tokens)
        if problems:
            raise ConfigError(problems)
        return config

    def _rebuild(self) -> None:
        """Recompute the read view: a copy of the saved data with environment overrides."""
        effective = copy.deepcopy(self._data)
        self._env_problems = [
            ConfigProblem(*problem)
            for problem in resolve_secret_files(effective, self.path.resolve().parent, self._types)
        ]
        self._pending_env = {}
        for name in sorted(self._env):
            rest = name[len(ENV_PREFIX) :]
            found = _resolve_env(effective, rest)
            if found is None:
                connector = self._env_connector(effective, rest)
                if connector is not None:
                    self._pending_env.setdefault(connector, []).append(name)
                else:
                    self._env_problems.append(ConfigProblem(name, "no such config key"))
                continue
            parent = effective
            for key in found[:-1]:
                parent = parent[key]
            like = _lookup(self._types, found, default=parent[found[-1]])
            parent[found[-1]] = _parse_env_value(self._env[name], like)
        self._effective = effective

    @staticmethod
    def _env_connector(effective: Mapping[str, Any], rest: str) -> str | None:
        """The connector whose section ``rest`` points into, for keys only its example has."""
        connectors = effective.get("connectors")
        if not rest.startswith("CONNECTORS_") or not isinstance(connectors, Mapping):
            return None
        rest = rest[len("CONNECTORS_") :]
        for network in sorted(connectors, key=len, reverse=True):
            if isinstance(network, str) and rest.startswith(network.upper() + "_"):
                return network
        return None

    # -- validation ---------------------------------------------------------------------------

    def validate(self, *, require_tokens: bool = True) -> list[ConfigProblem]:
        """Every problem of the core keys (connector sections: only ``enabled`` and
        ``ghost_username_template``)."""
        data = self._effective
        problems: list[ConfigProblem] = []
        _check(
            data, load_template(), "", problems, _CORE_RULES, ("bridge.permissions", "connectors")
        )
        if require_tokens:
            appservice = data.get("appservice")
            for key in ("as_token", "hs_token"):
                if isinstance(appservice, Mapping) and appservice.get(key) == PLACEHOLDER:
                    problems.append(
                        ConfigProblem(
                            f"appservice.{key}",
                            f"still the placeholder '{PLACEHOLDER}'; run `pontis -c "
                            f"{self.path} generate-registration -r registration.yaml` to fill "
                            "it in and register the bridge with the homeserver",
                        )
                    )
        bridge = data.get("bridge")
        if isinstance(bridge, Mapping) and "permissions" in bridge:
            problems += _check_permissions(bridge["permissions"])
        if isinstance(bridge, Mapping):
            problems += [ConfigProblem(*p) for p in check_rules(bridge.get("federation"))]
            problems += [ConfigProblem(*p) for p in check_agencies(bridge.get("agencies"))]
        if "connectors" in data:
            problems += _check_connectors(data["connectors"], data.get("appservice"))
        if isinstance(data.get("encryption"), Mapping):
            problems += [
                ConfigProblem(path, msg) for path, msg in _check_encryption(data["encryption"])
            ]
        return problems

    def validate_connector(self, network: str, example_yaml: str) -> list[ConfigProblem]:
        """Merge a connector's example section into ``connectors.<network>`` and check it.

        ``example_yaml`` is the body of the section (``enabled: false``, then the connector's
        keys), commented like the main template. Its keys become defaults (written on the next
        :meth:`save`); ``PONTIS_CONNECTORS_<NETWORK>_*`` variables naming its keys now apply.
        Raises ``ValueError`` if ``example_yaml`` itself is not a YAML mapping.
        """
        example = _yaml().load(example_yaml)
        if not isinstance(example, CommentedMap):
            raise ValueError(f"the example config of connector {network!r} is not a mapping")
        connectors = self._data.get("connectors")
        if not isinstance(connectors, CommentedMap):
            return []  # already reported by validate()
        if network not in connectors:
            connectors[network] = CommentedMap()
        section = connectors[network]
        if not isinstance(section, CommentedMap):
            return [ConfigProblem(_join("connectors", network), "expected a mapping")]
        _merge_defaults(section, example, _join("connectors", network))
        type_sections = self._types["connectors"]
        if not isinstance(type_sections.get(network), CommentedMap):
            type_sections[network] = CommentedMap()
        _merge_defaults(type_sections[network], example)
        self._rebuild()
        # Keys the core template documents for this connector are known too, even if the
        # connector's own example leaves them out.
        core_section = load_template()["connectors"].get(network)
        template = copy.deepcopy(example)
        if isinstance(core_section, Mapping):
            _merge_defaults(template, core_section)
        path = _join("connectors", network)
        section = self._effective["connectors"][network]
        # ghost_username_template belongs to every section; validate() checked it.
        if isinstance(section, Mapping) and TEMPLATE_KEY in section:
            template[TEMPLATE_KEY] = section[TEMPLATE_KEY]
        problems = validate_section(section, template, path)
        problems += [
            ConfigProblem(name, "no such config key") for name in self._pending_env.get(network, [])
        ]
        problems += _placeholder_secrets(self._effective["connectors"][network], path)
        return problems

    # -- writing ------------------------------------------------------------------------------

    def save(self) -> None:
        """Write the file back atomically with the user's comments and key order.

        Merged defaults and generated tokens are written; environment overrides are not.
        """
        yaml = _yaml()
        mapping, offset = self._indent
        yaml.indent(mapping=mapping, sequence=offset + 2, offset=offset)
        buffer = io.StringIO()
        yaml.dump(self._data, buffer)
        _atomic_write(self.path, buffer.getvalue())

    def generate_tokens(self) -> bool:
        """Replace ``generate`` placeholders of ``appservice.as_token``/``hs_token`` in the file.

        Returns whether anything changed; call :meth:`save` to keep the tokens.
        """
        appservice = self._data.get("appservice")
        if not isinstance(appservice, CommentedMap):
            return False
        changed = False
        for key in ("as_token", "hs_token"):
            if appservice.get(key) == PLACEHOLDER and key + FILE_SUFFIX not in appservice:
                appservice[key] = secrets.token_urlsafe(48)
                changed = True
        if changed:
            self._rebuild()
        return changed

    # -- reading ------------------------------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        return self._effective[key]

    def section(self, *path: str) -> Mapping[str, Any]:
        """The mapping at ``path`` (``section("connectors", "xmpp")``); KeyError if absent."""
        node: Any = self._effective
        for key in path:
            if not isinstance(node, Mapping) or key not in node:
                raise KeyError(".".join(path))
            node = node[key]
        if not isinstance(node, Mapping):
            raise KeyError(f"{'.'.join(path)} is not a mapping")
        return node

    def _get(self, *path: str) -> Any:
        node: Any = self._effective
        for key in path:
            node = node[key]
        return node

    @property
    def homeserver_address(self) -> str:
        return str(self._get("homeserver", "address")).rstrip("/")

    @property
    def domain(self) -> str:
        return str(self._get("homeserver", "domain"))

    @property
    def verify_ssl(self) -> bool:
        return bool(self._get("homeserver", "verify_ssl"))

    @property
    def appservice_id(self) -> str:
        return str(self._get("appservice", "id"))

    @property
    def appservice_address(self) -> str:
        return str(self._get("appservice", "address")).rstrip("/")

    @property
    def hostname(self) -> str:
        return str(self._get("appservice", "hostname"))

    @property
    def port(self) -> int:
        return int(self._get("appservice", "port"))

    @property
    def bot_username(self) -> str:
        return str(self._get("appservice", "bot_username"))

    @property
    def bot_mxid(self) -> str:
        return f"@{self.bot_username}:{self.domain}"

    @property
    def bot_displayname(self) -> str:
        return str(self._get("appservice", "bot_displayname"))

    @property
    def bot_avatar(self) -> str:
        return str(self._get("appservice", "bot_avatar"))

    @property
    def as_token(self) -> str:
        return str(self._get("appservice", "as_token"))

    @property
    def hs_token(self) -> str:
        return str(self._get("appservice", "hs_token"))

    @property
    def max_body_mib(self) -> int:
        return int(self._get("appservice", "max_body_mib"))

    @property
    def database_url(self) -> str:
        return str(self._get("database"))

    @property
    def encryption(self) -> EncryptionSettings:
        return EncryptionSettings.from_section(self.section("encryption"))

    @property
    def pickle_key_base_dir(self) -> Path:
        """Where a relative ``encryption.pickle_key_file`` is found: beside the config file."""
        return self.path.resolve().parent

    @property
    def permissions(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in self._get("bridge", "permissions").items()}

    @property
    def federation_rules(self) -> list[dict[str, Any]]:
        return [dict(rule) for rule in self._get("bridge", "federation")]

    @property
    def relay_enabled(self) -> bool:
        return bool(self._get("bridge", "relay", "enabled"))

    @property
    def retry_attempts(self) -> int:
        return int(self._get("bridge", "retry", "attempts"))

    @property
    def retry_backoff(self) -> float:
        return float(self._get("bridge", "retry", "backoff_seconds"))

    @property
    def retry_max_backoff(self) -> float:
        return float(self._get("bridge", "retry", "max_backoff_seconds"))

    @property
    def queue_size(self) -> int:
        return int(self._get("bridge", "queue_size"))

    @property
    def command_prefix(self) -> str:
        return str(self._get("bridge", "command_prefix"))

    @property
    def metrics_enabled(self) -> bool:
        return bool(self._get("metrics", "enabled"))

    @property
    def metrics_listen(self) -> str:
        return str(self._get("metrics", "listen"))

    @property
    def metrics_host_port(self) -> tuple[str, int]:
        parsed = split_host_port(self.metrics_listen)
        if parsed is None:
            raise ValueError(f"metrics.listen is not host:port: {self.metrics_listen!r}")
        return parsed

    @property
    def log_level(self) -> str:
        return str(self._get("logging", "level")).upper()

    @property
    def log_format(self) -> str:
        return str(self._get("logging", "format"))

    def secrets(self) -> list[str]:
        """Every secret value in the configuration, for scrubbing logs.

        Values of keys named like a secret (``as_token``, ``*secret*``, ``*password*``,
        ``*token*``, also inside lists such as Teams tenants) and URL passwords, such as the
        one in ``database``. The ``generate`` placeholder is not a secret.
        """
        found: list[str] = []

        def walk(node: Any, secret: bool) -> None:
            if isinstance(node, Mapping):
                for key, value in node.items():
                    walk(value, secret or (isinstance(key, str) and _is_secret_key(key)))
            elif isinstance(node, list):
                for item in node:
                    walk(item, secret)
            elif isinstance(node, str):
                if secret and node and node != PLACEHOLDER:
                    found.append(str(node))
                found.extend(m.group(1) for m in _URL_PASSWORD_VALUE_RE.finditer(node))

        walk(self._effective, False)
        return list(dict.fromkeys(found))

    def connector_section(self, network: str) -> dict[str, Any]:
        """A plain-dict copy of ``connectors.<network>`` (empty if the section is absent)."""
        section = self._effective["connectors"].get(network)
        return _plain(section) if isinstance(section, Mapping) else {}

    def enabled_connectors(self) -> list[str]:
        """Ids of connectors with ``enabled: true``, in file order."""
        return [
            str(network)
            for network, section in self._effective["connectors"].items()
            if isinstance(section, Mapping) and section.get("enabled") is True
        ]


def _check_permissions(permissions: Any) -> list[ConfigProblem]:
    path = "bridge.permissions"
    if not isinstance(permissions, Mapping):
        return [
            ConfigProblem(
                path,
                "expected a mapping of '*', a server name or a Matrix user id to "
                f"{', '.join(PERMISSION_LEVELS)}; got {_show(path, permissions)}",
            )
        ]
    problems = []
    for who, level in permissions.items():
        key_path = _join(path, who)
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
                ConfigProblem(key_path, f"expected one of {expected}, got {_show(key_path, level)}")
            )
    return problems


def _check_connectors(connectors: Any, appservice: Any) -> list[ConfigProblem]:
    if not isinstance(connectors, Mapping):
        return [
            ConfigProblem(
                "connectors", f"expected a mapping, got {_show('connectors', connectors)}"
            )
        ]
    problems = []
    for network, section in connectors.items():
        path = _join("connectors", network)
        if not isinstance(network, str) or not _CONNECTOR_ID_RE.fullmatch(network):
            problems.append(
                ConfigProblem(path, "expected a connector id of lowercase letters and digits")
            )
        if not isinstance(section, Mapping):
            problems.append(ConfigProblem(path, f"expected a mapping, got {_show(path, section)}"))
        elif "enabled" not in section:
            problems.append(ConfigProblem(f"{path}.enabled", "missing; expected true or false"))
        elif not isinstance(section["enabled"], bool):
            given = _show(f"{path}.enabled", section["enabled"])
            problems.append(
                ConfigProblem(f"{path}.enabled", f"expected true or false, got {given}")
            )
    bot = appservice.get("bot_username") if isinstance(appservice, Mapping) else None
    problems += [ConfigProblem(*p) for p in check_templates(connectors, bot, BUILTIN_CONNECTORS)]
    return problems


# ---------------------------------------------------------------------------------------------
# Appservice registration


def make_registration(config: Config, connector_ids: Iterable[str]) -> dict[str, Any]:
    """The appservice registration for the homeserver.

    Claims the ghost names of teams, xmpp and email (always, DESIGN §3) and of every other id in
    ``connector_ids`` (``@<id>_.*`` unless ``connectors.<id>.ghost_username_template`` says
    otherwise), ``#<id>_.*`` aliases and the bot, on the bridge's domain, exclusively. Regexes
    are anchored, since some homeservers search rather than match them.
    """
    ids = list(dict.fromkeys([*BUILTIN_CONNECTORS, *connector_ids]))
    domain = re.escape(config.domain)
    ghost_names = GhostNames.from_config(config)
    users = [
        {"exclusive": True, "regex": f"^@{re.escape(config.bot_username)}:{domain}$"},
        *({"exclusive": True, "regex": ghost_names.regex(cid)} for cid in ids),
    ]
    aliases = [{"exclusive": True, "regex": f"^#{re.escape(cid)}_.*:{domain}$"} for cid in ids]
    return {
        "id": config.appservice_id,
        "url": config.appservice_address,
        "as_token": config.as_token,
        "hs_token": config.hs_token,
        "sender_localpart": config.bot_username,
        "rate_limited": False,
        "receive_ephemeral": True,
        "de.sorunome.msc2409.push_ephemeral": True,
        "namespaces": {"users": users, "aliases": aliases, "rooms": []},
        # Encryption without /sync: to-device events, device lists and one-time-key counts in
        # transactions (MSC3202/MSC4203), and the bot's device made by the appservice (MSC4190).
        **(
            {"org.matrix.msc3202": True, "io.element.msc4190": True}
            if config.encryption.allow
            else {}
        ),
    }


def write_registration(path: str | Path, registration: Mapping[str, Any]) -> None:
    """Write ``registration`` as YAML to ``path`` atomically (it holds both tokens)."""
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]
    buffer = io.StringIO()
    buffer.write("# Appservice registration written by `pontis generate-registration`.\n")
    buffer.write("# Give this file to the homeserver (Synapse: app_service_config_files).\n")
    yaml.dump(_plain(registration), buffer)
    _atomic_write(Path(path), buffer.getvalue())
