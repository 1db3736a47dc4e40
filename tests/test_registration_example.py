"""registration.yaml.example shows what ``generate-registration`` writes for the default
settings on ``example.org`` (tokens aside), so what an operator reads there is what they get."""

from __future__ import annotations

from pathlib import Path

from ruamel.yaml import YAML

from bridge.core.config import Config, make_registration

ROOT = Path(__file__).parent.parent


def test_the_example_is_what_generate_registration_writes(tmp_path: Path) -> None:
    config_path = tmp_path / "config.yaml"
    config_path.write_text(
        "homeserver:\n  address: https://matrix.example.org\n  domain: example.org\n"
        "appservice:\n  as_token: AS_TOKEN_FROM_CONFIG_YAML\n"
        "  hs_token: HS_TOKEN_FROM_CONFIG_YAML\n"
    )
    written = make_registration(Config.load(config_path, environ={}), [])
    example = YAML(typ="safe").load((ROOT / "registration.yaml.example").read_text())
    assert example == written
