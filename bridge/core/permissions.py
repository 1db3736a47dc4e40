"""Who may use the bridge, from ``bridge.permissions``: an mxid beats its domain beats ``*``."""

from __future__ import annotations

from collections.abc import Mapping


class Permissions:
    NONE, RELAY, USER, ADMIN = 0, 1, 2, 3
    LEVELS = {"relay": RELAY, "user": USER, "admin": ADMIN}

    def __init__(self, rules: Mapping[str, str]) -> None:
        self._rules = {key: self.LEVELS[value] for key, value in rules.items()}

    def level(self, mxid: str) -> int:
        if mxid in self._rules:
            return self._rules[mxid]
        domain = mxid.split(":", 1)[1] if ":" in mxid else ""
        if domain in self._rules:
            return self._rules[domain]
        return self._rules.get("*", self.NONE)
