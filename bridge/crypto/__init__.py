"""End-to-end encryption for portal rooms, once for every connector.

Knows no network. The core hands it what transactions carry (to-device events, device lists,
one-time-key counts), asks it to decrypt every ``m.room.encrypted`` event before routing and to
encrypt everything it sends into an encrypted room. Underneath is ``mautrix.crypto`` running on
vodozemac through :mod:`bridge.crypto.olm_vodozemac`, which must be installed as ``olm`` before
``mautrix.crypto`` is first imported; importing this package does that.
"""

from __future__ import annotations

from bridge.crypto.olm_vodozemac import install as _install_olm_backend

_install_olm_backend()
