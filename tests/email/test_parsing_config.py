"""The ``parsing`` and ``attachments`` config sections: defaults, values, and problems by key."""

from __future__ import annotations

from typing import Any

import pytest
from ruamel.yaml import YAML

from bridge.email.config import EXAMPLE_CONFIG, EmailConfig
from bridge.email.protocol.limits import ParseLimits
from tests.email.smime import CA


def _section(**changes: Any) -> dict[str, Any]:
    section = YAML(typ="safe").load(EXAMPLE_CONFIG)
    for key, value in changes.items():
        group, _, name = key.partition("__")
        section[group][name] = value
    return dict(section)


def test_the_example_config_gives_the_default_limits_and_allows_any_attachment() -> None:
    cfg = EmailConfig.from_section(_section())
    assert cfg.parse_limits == ParseLimits()
    assert (cfg.parse_workers, cfg.parse_timeout) == (1, 30.0)
    assert cfg.attachment_types == ("*/*",) and cfg.attachment_max_bytes == 25 * 1024 * 1024
    assert cfg.problems() == []


def test_values_are_read_in_their_units() -> None:
    cfg = EmailConfig.from_section(
        _section(
            parsing__max_header_kib=64,
            parsing__max_decoded_mib=2,
            parsing__smime_trust_anchors=str(CA),
            attachments__max_mib=0.5,
            attachments__allowed_types=["Application/PDF", "image/*"],
        )
    )
    assert cfg.parse_limits.max_header_bytes == 64 * 1024
    assert cfg.parse_limits.max_decoded_bytes == 2 * 1024 * 1024
    assert cfg.attachment_max_bytes == 512 * 1024
    assert cfg.attachment_types == ("application/pdf", "image/*")
    assert cfg.problems() == []


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"parsing__timeout": 0}, "connectors.email.parsing.timeout: must be greater than 0"),
        ({"parsing__max_parts": -1}, "connectors.email.parsing.max_parts: must be greater than 0"),
        ({"parsing__max_depth": 500}, "connectors.email.parsing.max_depth: at most 50"),
        ({"parsing__memory_mib": 10}, "connectors.email.parsing.memory_mib: at least 256"),
        (
            {"parsing__smime_trust_anchors": "/nonexistent.pem"},
            "smime_trust_anchors: /nonexistent.pem is not a file",
        ),
        ({"attachments__allowed_types": ["pdf"]}, "allowed_types: 'pdf' is not a MIME type"),
        ({"attachments__allowed_types": ["*/pdf"]}, "allowed_types: '*/pdf' is not a MIME type"),
        (
            {"attachments__max_mib": 0},
            "connectors.email.attachments.max_mib: must be greater than 0",
        ),
    ],
)
def test_bad_values_are_problems_naming_their_key(change: dict[str, Any], problem: str) -> None:
    problems = EmailConfig.from_section(_section(**change)).problems()
    assert any(problem in p for p in problems), problems
