"""mautrix.crypto is written against python-olm: put the vodozemac adapter in its place first.

pytest imports this before the test modules here, so ``import mautrix.crypto`` in them binds to
:mod:`bridge.crypto.olm_vodozemac`, as it does in the bridge.
"""

from __future__ import annotations

from bridge.crypto.olm_vodozemac import install

install()
