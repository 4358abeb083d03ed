"""The base form every app's forms derive from.

CSRF is checked for every state-changing request in :func:`project.hooks.check_csrf`,
except requests authenticated by an API key (no browser adds that header on
its own, so they cannot be forged cross-site). Each form checks its own
``csrf_token`` field too; this base makes it agree with that one rule.
"""

from __future__ import annotations

from flask import current_app, g
from flask_wtf import FlaskForm


class Form(FlaskForm):
    class Meta(FlaskForm.Meta):
        @property
        def csrf(self) -> bool:
            enabled = bool(current_app.config.get("WTF_CSRF_ENABLED", True))
            return enabled and g.get("auth_method") != "api_key"
