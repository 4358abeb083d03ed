"""The base form every app's forms derive from.

CSRF is checked for every state-changing request in :func:`project.hooks.check_csrf`,
except requests authenticated by an API key (no browser adds that header on
its own, so they cannot be forged cross-site). Each form checks its own
``csrf_token`` field too; this base makes it agree with that one rule.

Rendering a field through WTForms costs 60-140 µs (each attribute goes through
``Markup.format``), yet an ``<input>``'s markup changes from one request to the
next only in its ``value``: the CSRF token, a typed login, a user's email. So an
input's markup is rendered once per form class, field and rendering arguments,
with a marker for its value, and kept; each request puts its own escaped value
in. Text areas are kept only blank, and other widgets (selects, buttons, dates)
are rendered afresh.
"""

from __future__ import annotations

import secrets
from collections.abc import Hashable
from typing import Any

from flask import current_app, g
from flask_wtf import FlaskForm
from markupsafe import Markup, escape
from wtforms import Field
from wtforms.widgets import CheckboxInput, Input, PasswordInput, RadioInput, TextArea

from project.csrf_tokens import FormCSRF

#: Inputs' markup, with _VALUE where the value goes; a few per field of each form, bounded.
_MARKUP: dict[Hashable, Markup] = {}
_MARKUP_MAX = 2048
#: Stands for the value in kept markup: escaping leaves it as it is, and no form can guess it.
_VALUE = f"value-{secrets.token_hex(16)}"
#: Widgets whose markup takes the value from a ``value`` argument and nothing else from it
#: (text, email, hidden, password, checkbox, radio); a submit button or a date does more.
_VALUE_TAKING = frozenset(
    {Input.__call__, PasswordInput.__call__, CheckboxInput.__call__, RadioInput.__call__}
)


def _markup_key(field: Field, render_kw: dict[str, Any]) -> Hashable | None:
    """What the field's markup depends on besides its value, or None if it is not kept.

    Such an input reads nothing else of the field: its id, name, type, flags,
    whether it is ticked and the rendering arguments are all in the key. A
    value that is not text is left to WTForms, as is anything with a datalist,
    and a text area unless it is blank (its value is its content).
    """
    widget = field.widget
    if isinstance(widget, TextArea):
        if field._value() not in (None, ""):
            return None
    elif type(widget).__call__ not in _VALUE_TAKING or not isinstance(field._value(), str):
        return None
    if getattr(field, "_datalist", None) is not None:
        return None
    try:
        return (
            type(field),
            type(widget),
            getattr(widget, "input_type", None),
            field.id,
            field.name,
            bool(getattr(field, "checked", field.data)),
            tuple(sorted(vars(field.flags).items())),
            tuple(sorted((field.render_kw or {}).items())),
            tuple(sorted(render_kw.items())),
        )
    except TypeError:  # an unorderable or unhashable argument: not worth keeping
        return None


class Form(FlaskForm):
    class Meta(FlaskForm.Meta):
        csrf_class = FormCSRF  # the token of project.csrf_tokens; Flask-WTF checks it

        @property
        def csrf(self) -> bool:
            enabled = bool(current_app.config.get("WTF_CSRF_ENABLED", True))
            return enabled and g.get("auth_method") != "api_key"

        def render_field(self, field: Field, render_kw: dict[str, Any]) -> Markup:
            key = _markup_key(field, render_kw)
            if key is None:
                return super().render_field(field, render_kw)
            markup = _MARKUP.get(key)
            if markup is None:
                marked = {} if isinstance(field.widget, TextArea) else {"value": _VALUE}
                markup = super().render_field(field, {**marked, **render_kw})
                if len(_MARKUP) < _MARKUP_MAX:
                    _MARKUP[key] = markup
            if _VALUE not in markup:  # a blank text area, a password (never shown), a fixed value
                return markup
            return markup.replace(_VALUE, escape(field._value()))  # Markup in, Markup out
