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
import io
import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from bridge.core.agencies import check_agencies
from bridge.core.config_checks import (
    CORE_RULES,
    PLACEHOLDER,
    ConfigError,
    ConfigProblem,
    check_connectors,
    check_permissions,
    check_value,
    join_path,
    placeholder_secrets,
    show_value,
    split_host_port,
    validate_section,
)
from bridge.core.config_yaml import (
    atomic_write,
    guess_indent,
    load_template,
    lookup,
    merge_defaults,
    parse_env_value,
    plain,
    resolve_env,
    round_trip_yaml,
)
from bridge.core.encryption_settings import PICKLE_KEY_ENV, EncryptionSettings
from bridge.core.encryption_settings import check_section as _check_encryption
from bridge.core.federation import check_rules
from bridge.core.ghost_names import TEMPLATE_KEY
from bridge.core.registration import make_registration, write_registration
from bridge.core.secret_files import FILE_SUFFIX, resolve_secret_files
from bridge.core.secret_files import is_secret_key as _is_secret_key

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
NOT_CONFIG_ENV = frozenset({PICKLE_KEY_ENV})
"""``PONTIS_*`` variables that are not config overrides (the pickle key itself)."""
_URL_PASSWORD_VALUE_RE = re.compile(r"://[^:/@\s]*:([^@\s]+)@")

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
            data = round_trip_yaml().load(text)
        except MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            what = error.problem or error.context or "syntax error"
            raise ConfigError([ConfigProblem(str(path), f"invalid YAML{where}: {what}")]) from None
        except YAMLError as error:
            raise ConfigError([ConfigProblem(str(path), f"invalid YAML: {error}")]) from None
        if not isinstance(data, CommentedMap):
            found = "an empty file" if data is None else show_value("", data)
            raise ConfigError(
                [
                    ConfigProblem(
                        str(path),
                        f"expected a mapping of settings at the top level, got {found}; "
                        "start from config.example.yaml",
                    )
                ]
            )
        merge_defaults(data, load_template())
        config = cls(data, path, os.environ if environ is None else environ)
        config._indent = guess_indent(text)
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
            found = resolve_env(effective, rest)
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
            like = lookup(self._types, found, default=parent[found[-1]])
            parent[found[-1]] = parse_env_value(self._env[name], like)
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
        check_value(
            data, load_template(), "", problems, CORE_RULES, ("bridge.permissions", "connectors")
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
            problems += check_permissions(bridge["permissions"])
        if isinstance(bridge, Mapping):
            problems += [ConfigProblem(*p) for p in check_rules(bridge.get("federation"))]
            problems += [ConfigProblem(*p) for p in check_agencies(bridge.get("agencies"))]
        if "connectors" in data:
            problems += check_connectors(data["connectors"], data.get("appservice"))
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
        example = round_trip_yaml().load(example_yaml)
        if not isinstance(example, CommentedMap):
            raise ValueError(f"the example config of connector {network!r} is not a mapping")
        connectors = self._data.get("connectors")
        if not isinstance(connectors, CommentedMap):
            return []  # already reported by validate()
        if network not in connectors:
            connectors[network] = CommentedMap()
        section = connectors[network]
        if not isinstance(section, CommentedMap):
            return [ConfigProblem(join_path("connectors", network), "expected a mapping")]
        merge_defaults(section, example, join_path("connectors", network))
        type_sections = self._types["connectors"]
        if not isinstance(type_sections.get(network), CommentedMap):
            type_sections[network] = CommentedMap()
        merge_defaults(type_sections[network], example)
        self._rebuild()
        # Keys the core template documents for this connector are known too, even if the
        # connector's own example leaves them out.
        core_section = load_template()["connectors"].get(network)
        template = copy.deepcopy(example)
        if isinstance(core_section, Mapping):
            merge_defaults(template, core_section)
        path = join_path("connectors", network)
        section = self._effective["connectors"][network]
        # ghost_username_template belongs to every section; validate() checked it.
        if isinstance(section, Mapping) and TEMPLATE_KEY in section:
            template[TEMPLATE_KEY] = section[TEMPLATE_KEY]
        problems = validate_section(section, template, path)
        problems += [
            ConfigProblem(name, "no such config key") for name in self._pending_env.get(network, [])
        ]
        problems += placeholder_secrets(self._effective["connectors"][network], path)
        return problems

    # -- writing ------------------------------------------------------------------------------

    def save(self) -> None:
        """Write the file back atomically with the user's comments and key order.

        Merged defaults and generated tokens are written; environment overrides are not.
        """
        yaml = round_trip_yaml()
        mapping, offset = self._indent
        yaml.indent(mapping=mapping, sequence=offset + 2, offset=offset)
        buffer = io.StringIO()
        yaml.dump(self._data, buffer)
        atomic_write(self.path, buffer.getvalue())

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
        return plain(section) if isinstance(section, Mapping) else {}

    def enabled_connectors(self) -> list[str]:
        """Ids of connectors with ``enabled: true``, in file order."""
        return [
            str(network)
            for network, section in self._effective["connectors"].items()
            if isinstance(section, Mapping) and section.get("enabled") is True
        ]
