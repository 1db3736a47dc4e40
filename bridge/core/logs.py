"""Log setup: readable text or one JSON object per line, with secrets scrubbed."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable


class SecretFilter(logging.Filter):
    """Replaces known secrets in every record, wherever a library may have put them."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if s and len(s) >= 8]

    def filter(self, record: logging.LogRecord) -> bool:
        if self._secrets:
            message = record.getMessage()
            scrubbed = message
            for secret in self._secrets:
                scrubbed = scrubbed.replace(secret, "<redacted>")
            if scrubbed != message:
                record.msg, record.args = scrubbed, None
        return True


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(level: str, fmt: str, secrets: Iterable[str]) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(SecretFilter(secrets))
    if fmt == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's access log and mautrix's per-request logs drown an operator at INFO.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # httpx (under msgraph-sdk) logs every request at INFO: noise for operators, CPU per message.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # aiosmtpd logs every SMTP/LMTP command at INFO (and a dropped connection as if it failed).
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    # aiosqlite logs every statement with its parameters at DEBUG: login secrets (when no pickle
    # key seals them), message bodies of the inbox. Never, whatever the level.
    logging.getLogger("aiosqlite").setLevel(logging.INFO)
    # slixmpp logs every stanza at DEBUG (message bodies, the people in them) and a component's
    # handshake hash (SHA-1 of the stream id and the secret: a weak secret can be guessed
    # offline from it). Never, whatever the level.
    logging.getLogger("slixmpp").setLevel(logging.INFO)
    logging.getLogger("pontis.matrix.api").setLevel(max(logging.getLevelName(level), logging.INFO))
