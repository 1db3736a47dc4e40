"""Errors with meaning.

Connectors raise these; only the core turns them into Matrix notices, retries or dead letters.
Every error carries a ``user_message`` written for the person in Element: what happened and what
to do next. ``str(error)`` is for the operator's log and may hold more detail (never secrets).
"""

from __future__ import annotations


class BridgeError(Exception):
    """Base class. Unexpected exceptions are treated like a :class:`TransientError`."""

    user_message: str = "The bridge could not deliver this."

    def __init__(self, message: str, *, user_message: str | None = None) -> None:
        super().__init__(message)
        if user_message is not None:
            self.user_message = user_message


class TransientError(BridgeError):
    """The remote side failed in a way that may heal (timeout, 5xx, reconnecting).

    The core retries with backoff, keeping the portal's order, and after the configured number
    of attempts parks the event as a dead letter and tells the sender.
    """

    user_message = "The remote network is not reachable right now; the bridge kept retrying."

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        user_message: str | None = None,
    ) -> None:
        super().__init__(message, user_message=user_message)
        self.retry_after = retry_after


class PermanentError(BridgeError):
    """Retrying cannot help (the remote rejected the content). Parked at once; sender told."""

    user_message = "The remote network rejected this message."


class NotSupported(BridgeError):
    """The network cannot carry this action (an edit on email). The sender gets a notice."""

    user_message = "This network does not support that."


class AuthExpired(BridgeError):
    """The login's credentials stopped working; the user must log in again."""

    user_message = "Your login to this network has expired. Send `login` to the bridge bot."


class NotFound(BridgeError):
    """A remote chat, user or message does not exist (any more)."""

    user_message = "The bridge could not find that on the remote network."
