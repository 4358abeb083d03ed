"""Secrets that travel in URLs never reach a log line.

Two kinds of bearer token ride in a URL: a password-reset link's token (in
the path, one use, an hour) and a share link's token (``?share=``, up to
``TRANSFER_SHARE_MAX_DAYS``). Whoever reads a log that holds them can take
over an account or fetch a private file, and logs are read by more people,
kept longer and shipped further than the database. So every log record made
in the process is redacted where it is made (a log record factory), which
covers gunicorn's access log, werkzeug's request lines under ``runserver``
and the app's own loggers alike, whatever handler or format prints them.
"""

from __future__ import annotations

import logging
import re
from typing import Any

REDACTED = "[redacted]"
_SECRETS = re.compile(
    r"(?P<keep>/password/reset/)[^/?#\s\"']+"  # the reset token path segment
    r"|(?P<param>[?&;](?:share|token)=)[^&#\s\"']+"  # share links (and any ?token=)
)


def redact(text: str) -> str:
    """*text* with every URL-borne token replaced by ``[redacted]``."""
    return _SECRETS.sub(lambda m: (m["keep"] or m["param"]) + REDACTED, text)


def install_log_redaction() -> None:
    """Redact every log record this process makes from now on (idempotent)."""
    factory = logging.getLogRecordFactory()
    if getattr(factory, "redacts", False):
        return

    def redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed format: logging reports it when it emits
            return record
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return record

    redacting_factory.redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(redacting_factory)
