"""The relay account's sign-in, through ``login teams`` like anyone's.

Whoever completes a device-code sign-in as the tenant's configured ``relay_username`` has
that account's credentials and passed its MFA: that is the proof, so the relay needs no
password in the configuration and no MFA exemption. The sign-in does not become a Matrix
user's Teams login (the relay posts for everyone without one); its token cache is kept sealed
for the tenant (:class:`bridge.teams.tokens.RelaySignIn`) and used from then on, also after
restarts.
"""

from __future__ import annotations

import logging

from bridge.core import BridgeError, LoginStep
from bridge.teams.protocol.msal_auth import UserTokens
from bridge.teams.tenant import TenantLink

log = logging.getLogger(__name__)


async def relay_signed_in(link: TenantLink, user: UserTokens, upn: str | None) -> LoginStep | None:
    """If ``upn`` is the tenant's relay account, keep ``user`` as its sign-in and say so;
    None for anyone else (their own login goes on)."""
    relay = link.relay_sign_in
    if relay is None or not upn or upn.lower() != relay.username:
        return None
    try:
        await relay.signed_in(user)
    except ValueError as err:  # no pickle key: the refresh token is never kept unsealed
        raise BridgeError(
            f"relay sign-in not kept: {err}",
            user_message="The relay account signed in, but the bridge has no pickle key to"
            " keep its sign-in encrypted; the administrator must set"
            " encryption.pickle_key_file, then try again.",
        ) from err
    log.warning("Tenant %s: the relay account %s signed in (device code)", link.id, upn)
    return LoginStep(
        kind="complete",
        instructions=f"The relay account {upn} is signed in: it posts for Matrix users without"
        " a Teams login of their own from now on. This was not stored as your own Teams login.",
    )
