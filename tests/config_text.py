"""The smallest valid config, as text, for tests that write their own config files."""

BASE_CONFIG = """\
homeserver:
  address: https://matrix.hub.test
  domain: hub.test
appservice:
  port: 29331
  as_token: as-secret-value-1
  hs_token: hs-secret-value-2
"""
