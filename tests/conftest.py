"""Shared pytest configuration.

Fixtures live in plugin modules, one per area, so each stays small and owned by one place.
"""

pytest_plugins = ["tests.store_fixtures", "tests.cli_fixtures"]
