"""Pontis: a Matrix application service hosting Teams, XMPP and email connectors."""

__version__ = "0.1.0"
