"""The YAML side of the configuration: the packaged template, merging its new keys into an
operator's file without losing their comments or order, atomic writes, and the
``PONTIS_<PATH>`` environment overrides.
"""

from __future__ import annotations

import copy
import importlib.resources
import os
import tempfile
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from bridge.core.config_checks import OPEN_MAPPINGS, join_path


def round_trip_yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096
    return yaml


@cache
def _template_text() -> str:
    return importlib.resources.files("bridge").joinpath("example-config.yaml").read_text("utf-8")


def load_template() -> CommentedMap:
    """A fresh, modifiable copy of the packaged config template."""
    data = round_trip_yaml().load(_template_text())
    assert isinstance(data, CommentedMap)
    return data


def merge_defaults(target: CommentedMap, defaults: Mapping[Any, Any], path: str = "") -> bool:
    """Add the keys of ``defaults`` missing from ``target``, recursively; user values win.

    A new key goes after the nearest key that precedes it in ``defaults``, so merged files keep
    the template's order. Returns whether anything was added.
    """
    changed = False
    for index, (key, default) in enumerate(defaults.items()):
        key_path = join_path(path, key)
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
            and key_path not in OPEN_MAPPINGS
        ):
            changed |= merge_defaults(target[key], default, key_path)
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


def plain(value: Any) -> Any:
    """ruamel's commented containers and scalar subclasses as plain Python values."""
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    if isinstance(value, bool) or value is None:
        return value
    for plain_type in (int, float, str):
        if isinstance(value, plain_type):
            return plain_type(value)
    return value


def guess_indent(text: str) -> tuple[int, int]:
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


def atomic_write(path: Path, text: str) -> None:
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


def resolve_env(node: Any, rest: str) -> list[Any] | None:
    """Key path named by ``rest`` (``APPSERVICE_BOT_USERNAME``) in ``node``, longest keys first;
    list items by index (``CONNECTORS_TEAMS_TENANTS_0_CLIENT_SECRET``)."""
    if isinstance(node, list):
        index, _, tail = rest.partition("_")
        if not index.isdigit() or int(index) >= len(node):
            return None
        if not tail:
            return [int(index)]
        found = resolve_env(node[int(index)], tail)
        return None if found is None else [int(index), *found]
    if not isinstance(node, Mapping):
        return None
    keys = sorted((key for key in node if isinstance(key, str)), key=len, reverse=True)
    for key in keys:
        name = key.upper()
        if rest == name:
            return [key]
        if rest.startswith(name + "_"):
            found = resolve_env(node[key], rest[len(name) + 1 :])
            if found is not None:
                return [key, *found]
    return None


def lookup(tree: Any, path: Iterable[str], default: Any) -> Any:
    for key in path:
        if not isinstance(tree, Mapping) or key not in tree:
            return default
        tree = tree[key]
    return tree


def parse_env_value(raw: str, like: Any) -> Any:
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
