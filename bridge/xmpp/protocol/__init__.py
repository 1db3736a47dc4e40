"""XMPP protocol helpers that know nothing about the bridge.

Modules here depend on the standard library only and never import from ``bridge``:

- ``escaping``: XEP-0106 JID escaping, JID syntax checks (RFC 7622) and the mapping between
  Matrix ids / room aliases and JIDs (DESIGN §3).
- ``styling``: XEP-0393 Message Styling to and from Matrix ``org.matrix.custom.html``.
"""
