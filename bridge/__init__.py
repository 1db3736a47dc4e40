"""Pontis: a Matrix application service hosting Teams, XMPP and email connectors."""

from importlib.metadata import PackageNotFoundError, version


def _installed_version() -> str:
    """The version pip recorded when Pontis was installed: setuptools-scm derives it from the
    git tag (pyproject.toml), so there is one source of truth and nothing to bump by hand.
    A tree run without installing has no metadata and says so rather than guessing."""
    try:
        return version("pontis")
    except PackageNotFoundError:
        return "0+unknown"


__version__ = _installed_version()
