"""Forms of the transfer pages (uploads go through tus, not a form)."""

from __future__ import annotations

from flask import current_app
from wtforms import IntegerField
from wtforms.validators import InputRequired, NumberRange, ValidationError

from project.forms import Form


class ShareForm(Form):
    days = IntegerField(
        "Link works for (days)",
        default=7,
        validators=[InputRequired("Say for how many days the link should work.")],
    )

    def validate_days(self, field: IntegerField) -> None:
        longest = current_app.config["TRANSFER_SHARE_MAX_DAYS"]
        NumberRange(1, longest, f"Choose between 1 and {longest} days.")(self, field)
        if field.data is None:
            raise ValidationError("Enter a whole number of days.")
