"""Outgoing mail: the development console prints messages a person can use as they are."""

from __future__ import annotations

import pytest
from flask import Flask

from project.mail import send_mail

LINK = "http://127.0.0.1:5000/accounts/password/reset/" + "Ab3_-" * 12


def test_the_console_prints_links_whole_on_their_own_line(
    app: Flask, capsys: pytest.CaptureFixture[str]
) -> None:
    """A reset link copied from the runserver terminal must work: printed as MIME, the body was
    quoted-printable, long lines were broken with '=' and the copied link was cut in two."""
    app.config["MAIL_BACKEND"] = "console"
    with app.app_context():
        send_mail("alice@example.com", "Reset your password", f"Hello,\n\n{LINK}\n\nBye — ✓\n")
    printed = capsys.readouterr().out
    assert LINK in printed.splitlines()
    assert "To: alice@example.com" in printed and "Subject: Reset your password" in printed
    assert "Bye — ✓" in printed  # decoded, not =E2=80=94
    assert "=\n" not in printed
