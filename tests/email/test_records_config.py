"""``connectors.email.records``: the default, an older section without it, and a bad value."""

from __future__ import annotations

import copy
from typing import Any

from ruamel.yaml import YAML

from bridge.email.config import EXAMPLE_CONFIG, EmailConfig


def _section() -> dict[str, Any]:
    return copy.deepcopy(dict(YAML(typ="safe").load(EXAMPLE_CONFIG)))


def test_records_are_kept_a_year_by_default_and_an_older_section_gets_that_too() -> None:
    assert EmailConfig.from_section(_section()).records_keep_days == 365
    old = _section()
    del old["records"]
    assert EmailConfig.from_section(old).records_keep_days == 365


def test_a_negative_retention_names_its_key() -> None:
    data = _section()
    data["records"] = {"keep_days": -1}
    assert "connectors.email.records.keep_days: must be 0 (for ever) or more" in (
        EmailConfig.from_section(data).problems()
    )
    data["records"] = {"keep_days": 0}
    assert EmailConfig.from_section(data).problems() == []
