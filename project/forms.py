"""The base form every app's forms derive from.

CSRF is checked for every state-changing request in :func:`project.hooks.check_csrf`,
except requests authenticated by an API key (no browser adds that header on
its own, so they cannot be forged cross-site). Each form checks its own
``csrf_token`` field too; this base makes it agree with that one rule.

Rendering a field through WTForms costs 60-140 µs (each attribute goes through
``Markup.format``), and most of a page's fields are blank: the login form a
visitor is shown is the same markup every time. So a blank field's markup is
kept, per form class, field and rendering arguments, and reused; a field with a
value or errors is rendered afresh.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from flask import current_app, g
from flask_wtf import FlaskForm
from markupsafe import Markup
from wtforms import Field
from wtforms.widgets import CheckboxInput, Input, TextArea

#: Blank fields' markup; a few per field of each form, bounded all the same.
_BLANK_MARKUP: dict[Hashable, Markup] = {}
_BLANK_MARKUP_MAX = 2048


def _blank_key(field: Field, render_kw: dict[str, Any]) -> Hashable | None:
    """What a blank field's markup depends on, or None if the field shows a value or errors.

    Blank means nothing of the request or the session is in the markup: no
    submitted data, no errors, and an empty value (the CSRF field's value is
    the session's token, so it never counts as blank).
    """
    widget = field.widget
    if field.errors or field.raw_data:
        return None
    if isinstance(widget, CheckboxInput):
        if field.data:  # its value attribute is fixed; only "checked" follows the data
            return None
    elif not isinstance(widget, Input | TextArea) or (
        field.data not in (None, "") or field._value() not in (None, "")
    ):
        return None
    try:
        return (
            type(field),
            type(widget),
            getattr(widget, "input_type", None),
            field.id,
            field.name,
            tuple(sorted(vars(field.flags).items())),
            tuple(sorted((field.render_kw or {}).items())),
            tuple(sorted(render_kw.items())),
        )
    except TypeError:  # an unorderable or unhashable argument: not worth keeping
        return None


class Form(FlaskForm):
    class Meta(FlaskForm.Meta):
        @property
        def csrf(self) -> bool:
            enabled = bool(current_app.config.get("WTF_CSRF_ENABLED", True))
            return enabled and g.get("auth_method") != "api_key"

        def render_field(self, field: Field, render_kw: dict[str, Any]) -> Markup:
            key = _blank_key(field, render_kw)
            if key is None:
                return super().render_field(field, render_kw)
            markup = _BLANK_MARKUP.get(key)
            if markup is None:
                markup = super().render_field(field, render_kw)
                if len(_BLANK_MARKUP) < _BLANK_MARKUP_MAX:
                    _BLANK_MARKUP[key] = markup
            return markup
