"""Email protocol helpers that know nothing about the bridge.

Modules here depend on the standard library (and nh3, to read hostile HTML in linear time) and
never import from ``bridge``:

- ``addresses``: address validation and case-folding, portal addresses, Message-IDs derived
  from Matrix event ids (DESIGN §3).
- ``parse``: raw RFC 5322/MIME bytes to a ``ParsedMail`` (bodies, attachments, loop and
  auto-reply markers, delivery status notifications), refusing malformed or hostile mail.
- ``authres``: reading RFC 8601 Authentication-Results written by the trusted MTA.
- ``quotes``: separating a reply's new text from quoted history (plain text and HTML).
- ``compose``: building outgoing mail safely (no header injection, stable threading headers).

- ``limits``: the parse limits, counted by the parser itself while it parses.
- ``secure``: S/MIME and OpenPGP signed or encrypted mail, and S/MIME signature checks.

``charsets``, ``filenames`` and ``dsn`` are helpers of ``parse`` and ``compose``.
"""
