"""A value from the operator's config as a problem message may show it: briefly, and never a
password (``secret`` values and the password in a ``scheme://user:password@host`` URI)."""

from __future__ import annotations

import re
from collections.abc import Mapping

HIDDEN = "<hidden>"
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")


def shown(value: object, *, secret: bool = False) -> str:
    if secret:
        return HIDDEN
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        text = _URL_PASSWORD.sub(rf"\1{HIDDEN}@", value)
        return repr(text if len(text) <= 80 else text[:77] + "...")
    return repr(value)
