"""Secrets kept out of the config file, and files that show secrets to other users.

Every key that holds a secret — its name contains ``secret``, ``password`` or ``token``
(``appservice.as_token``, ``connectors.xmpp.component.secret``, a Teams tenant's
``client_secret``), and ``database``, whose URI may carry a password — can instead be given as
``<key>_file: PATH``. The file's content without trailing whitespace is the value; a relative
path is relative to the config file. The config file keeps the ``*_file`` key; the value is
read on every load and never written back. ``PONTIS_<PATH>`` variables still override the
value (they are applied after the files are read).

A secret file that is missing, unreadable or empty is a config problem naming the key and the
path; one that other users may read is a warning from ``pontis check`` and at start-up, as are
the config file, the registration file and the pickle key. Secret values never appear in any
message.
"""

from __future__ import annotations

import logging
import stat
import sys
from collections.abc import Iterable, Mapping, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bridge.core.config import Config

__all__ = [
    "FILE_SUFFIX",
    "default_registrations",
    "exposed_files",
    "is_secret_key",
    "log_exposed_files",
    "print_exposed_files",
    "resolve_secret_files",
    "secret_file_keys",
]

FILE_SUFFIX = "_file"
SECRET_WORDS = ("secret", "password", "token")
_ALSO_SECRET = frozenset({"database"})  # a URI with user:password@
_UNSET = ("", "generate", None)  # what the template leaves in a key given by a file
_MAX_BYTES = 64 * 1024


def is_secret_key(key: str) -> bool:
    """Whether a config key's value is a secret (to hide in messages and logs)."""
    return any(word in key.lower() for word in SECRET_WORDS)


def _is_file_key(key: Any) -> bool:
    if not isinstance(key, str) or not key.endswith(FILE_SUFFIX):
        return False
    base = key[: -len(FILE_SUFFIX)]
    return is_secret_key(base) or base in _ALSO_SECRET


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _walk(
    node: Any, path: str = "", defaults: Any = None
) -> Iterable[tuple[str, MutableMapping[Any, Any], Mapping[Any, Any]]]:
    """Every mapping in ``node`` with its key path and the matching mapping of ``defaults``
    (empty where there is none), lists included, parents first."""
    if isinstance(node, MutableMapping):
        defaults = defaults if isinstance(defaults, Mapping) else {}
        yield path, node, defaults
        for key, value in list(node.items()):
            yield from _walk(value, _join(path, str(key)), defaults.get(key))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _walk(item, _join(path, index))


def _resolve(raw: Any, base_dir: Path) -> Path:
    path = Path(str(raw)).expanduser()
    return path if path.is_absolute() else base_dir / path


def resolve_secret_files(tree: Any, base_dir: Path, defaults: Any = None) -> list[tuple[str, str]]:
    """Replace every ``<secret>_file`` key in ``tree`` (modified in place) by ``<secret>`` with
    the file's content. ``defaults`` is the template: a key still at its template value does not
    count as set. Returns ``(key path, message)`` for each file that cannot be used."""
    problems: list[tuple[str, str]] = []
    for path, node, default in list(_walk(tree, "", defaults)):
        for key in [k for k in node if _is_file_key(k)]:
            base = key[: -len(FILE_SUFFIX)]
            raw = node.pop(key)
            key_path, base_path = _join(path, key), _join(path, base)
            if not isinstance(raw, str) or not raw.strip():
                problems.append((key_path, "expected the path of a file holding the secret"))
                continue
            if node.get(base) not in _UNSET and node.get(base) != default.get(base):
                problems.append((key_path, f"{base_path} is set as well; keep only one of the two"))
                continue
            file = _resolve(raw, base_dir)
            try:
                with file.open("rb") as handle:
                    data = handle.read(_MAX_BYTES + 1)
            except FileNotFoundError:
                problems.append((key_path, f"{file} does not exist"))
                continue
            except OSError as err:
                problems.append((key_path, f"cannot read {file}: {err.strerror or err}"))
                continue
            if len(data) > _MAX_BYTES:
                problems.append((key_path, f"{file} is larger than {_MAX_BYTES} bytes"))
                continue
            try:
                value = data.decode("utf-8").rstrip()
            except UnicodeDecodeError:
                problems.append((key_path, f"{file} is not UTF-8 text"))
                continue
            if not value:
                problems.append((key_path, f"{file} is empty"))
                continue
            node[base] = value
    return problems


def secret_file_keys(data: Any, base_dir: Path) -> list[tuple[str, Path]]:
    """``(key path, file)`` of every ``*_file`` secret in ``data`` (the saved config)."""
    return [
        (_join(path, key), _resolve(node[key], base_dir))
        for path, node, _ in _walk(data)
        for key in node
        if _is_file_key(key) and isinstance(node[key], str) and node[key].strip()
    ]


def _world_readable(file: Path) -> bool:
    try:
        return bool(file.stat().st_mode & stat.S_IROTH)
    except OSError:
        return False


def exposed_files(config: Config, registrations: Iterable[Path] = ()) -> list[str]:
    """One warning per secret-holding file that every user on the machine may read: the config
    file, the registration files given, the pickle key and each ``*_file`` secret."""
    saved: Mapping[str, Any] = config._data  # the file as written, with its *_file keys
    files: list[tuple[str, Path]] = [("the config file", config.path)]
    files += [("the registration file", path) for path in registrations]
    key_file = config.encryption.pickle_key_file if config.encryption.allow else ""
    if key_file:
        files.append(("encryption.pickle_key_file", _resolve(key_file, config.pickle_key_base_dir)))
    base_dir = config.path.resolve().parent
    files += secret_file_keys(saved, base_dir)
    seen: set[Path] = set()
    warnings = []
    for what, file in files:
        real = file.resolve()
        if real in seen or not _world_readable(real):
            continue
        seen.add(real)
        warnings.append(
            f"{what}: {file} holds secrets and every user on this machine can read it; "
            f"run `chmod o-rwx {file}`"
        )
    return warnings


def default_registrations(config: Config) -> list[Path]:
    """``registration.yaml`` beside the config file and in the working directory, if present."""
    found: list[Path] = []
    for path in (config.path.resolve().parent / "registration.yaml", Path("registration.yaml")):
        if path.exists() and path.resolve() not in [p.resolve() for p in found]:
            found.append(path)
    return found


def print_exposed_files(config: Config, registrations: Iterable[Path] = ()) -> None:
    """Print :func:`exposed_files` as warnings on stderr (``pontis check``; not a failure)."""
    for warning in exposed_files(config, [*registrations, *default_registrations(config)]):
        print(f"pontis: warning: {warning}", file=sys.stderr)


def log_exposed_files(config: Config, log: logging.Logger) -> None:
    """Log :func:`exposed_files` as warnings (at start-up)."""
    for warning in exposed_files(config, default_registrations(config)):
        log.warning("%s", warning)
