"""Outgoing email: SMTP in production, printed to the console in development (as Django does).

``MAIL_BACKEND`` picks the backend: ``console`` (default outside production)
writes the whole message to stdout so a developer can click a reset link;
``smtp`` (default in production) sends through ``MAIL_SERVER``.
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage

from flask import current_app


class MailError(Exception):
    """The message could not be handed to the mail server."""


def send_mail(to: str, subject: str, body: str) -> None:
    """Send a plain-text message to one recipient.

    Raises:
        MailError: the SMTP server refused the message or could not be reached.
    """
    config = current_app.config
    message = EmailMessage()
    message["From"] = config["MAIL_FROM"]
    message["To"] = to
    message["Subject"] = subject
    message.set_content(body)
    if config["MAIL_BACKEND"] == "console":
        # Decoded, not as MIME: quoted-printable breaks long lines with "=", and a
        # reset link copied from the terminal would then be cut in two.
        heads = "".join(f"{name}: {message[name]}\n" for name in ("From", "To", "Subject"))
        print(f"{heads}\n{message.get_content().rstrip()}\n{'-' * 72}", flush=True)
        return
    try:
        with smtplib.SMTP(config["MAIL_SERVER"], config["MAIL_PORT"], timeout=10) as smtp:
            if config["MAIL_USE_TLS"]:
                smtp.starttls(context=ssl.create_default_context())
            if config["MAIL_USERNAME"]:
                smtp.login(config["MAIL_USERNAME"], config["MAIL_PASSWORD"])
            smtp.send_message(message)
    except (OSError, smtplib.SMTPException) as exc:
        raise MailError(f"could not send mail via {config['MAIL_SERVER']}: {exc}") from exc
