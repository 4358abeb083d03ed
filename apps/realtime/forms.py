"""The form to create a chat room."""

from __future__ import annotations

from wtforms import StringField
from wtforms.validators import DataRequired, Regexp, ValidationError

from apps.realtime import models
from project.forms import Form


class RoomForm(Form):
    name = StringField(
        "Room name",
        [
            DataRequired("Give the room a name."),
            Regexp(
                models.ROOM_NAME.pattern,
                message="Use 1 to 50 lowercase letters, digits, - and _, starting with a "
                "letter or digit.",
            ),
        ],
        render_kw={"placeholder": "e.g. general", "maxlength": 50, "autocomplete": "off"},
    )

    def validate_name(self, field: StringField) -> None:
        if models.get_room(field.data) is not None:
            raise ValidationError("A room with this name already exists.")
