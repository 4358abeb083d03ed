"""Account forms (Flask-WTF): every field validated, messages kept in one place, CSRF on all.

Field checks that need the database or another field are ``validate_<field>``
methods; messages live in :data:`MESSAGES` so the wording is consistent and
tests can refer to it.
"""

from __future__ import annotations

from typing import Any

from wtforms import (
    BooleanField,
    EmailField,
    HiddenField,
    PasswordField,
    SelectField,
    SelectMultipleField,
    StringField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Email, EqualTo, Length, Regexp, ValidationError

from apps.accounts import models
from apps.accounts.passwords import MAX_LENGTH, password_problems
from project.forms import Form

MESSAGES = {
    "required": "This field is required.",
    "username_chars": "Use letters, digits and . + - _ only.",
    "username_taken": "That username is taken.",
    "email_invalid": "Enter a valid email address.",
    "email_taken": "An account with this email already exists.",
    "password_mismatch": "The two passwords do not match.",
    "password_wrong": "Your current password is not correct.",
    "login_failed": "That username or email and password do not match an account.",
    "inactive": "This account has been deactivated. Contact an administrator.",
    "code_wrong": "That code is not right, or it has been used already.",
    "code_format": "Enter the 6 digits from your app, or a recovery code like abcde-12345.",
}

# No "@": a login containing one is looked up as an email address.
USERNAME_CHARS = r"^[\w.+-]+\Z"
USERNAME = [
    DataRequired(MESSAGES["required"]),
    Length(min=3, max=150, message="Use between 3 and 150 characters."),
    Regexp(USERNAME_CHARS, message=MESSAGES["username_chars"]),
]
EMAIL = [
    DataRequired(MESSAGES["required"]),
    Length(max=254, message="Use at most 254 characters."),
    Email(MESSAGES["email_invalid"], check_deliverability=False),
]
NEW_PASSWORD = [DataRequired(MESSAGES["required"])]
PASSWORD = [
    DataRequired(MESSAGES["required"]),
    Length(max=MAX_LENGTH, message=f"Use at most {MAX_LENGTH} characters."),
]


def _check_new_password(form: Any, field: Any, username: str, email: str) -> None:
    problems = password_problems(field.data or "", username=username, email=email)
    if problems:
        raise ValidationError(" ".join(problems))


class RegisterForm(Form):
    username = StringField("Username", USERNAME, render_kw={"autocomplete": "username"})
    email = EmailField("Email", EMAIL, render_kw={"autocomplete": "email"})
    password = PasswordField("Password", NEW_PASSWORD, render_kw={"autocomplete": "new-password"})
    confirm = PasswordField(
        "Confirm password",
        [
            DataRequired(MESSAGES["required"]),
            EqualTo("password", MESSAGES["password_mismatch"]),
        ],
        render_kw={"autocomplete": "new-password"},
    )

    def validate_username(self, field: StringField) -> None:
        if models.username_taken(field.data):
            raise ValidationError(MESSAGES["username_taken"])

    def validate_email(self, field: EmailField) -> None:
        if models.email_taken(field.data):
            raise ValidationError(MESSAGES["email_taken"])

    def validate_password(self, field: PasswordField) -> None:
        _check_new_password(self, field, self.username.data or "", self.email.data or "")


class LoginForm(Form):
    login = StringField(
        "Username or email",
        [
            DataRequired(MESSAGES["required"]),
            Length(max=254, message="Use at most 254 characters."),
        ],
        render_kw={"autocomplete": "username"},
    )
    password = PasswordField("Password", PASSWORD, render_kw={"autocomplete": "current-password"})
    remember = BooleanField("Keep me logged in on this device")
    next = HiddenField()


CODE = [
    DataRequired(MESSAGES["required"]),
    Length(max=20, message=MESSAGES["code_format"]),
]
CODE_INPUT = {"autocomplete": "one-time-code", "inputmode": "text", "spellcheck": "false"}


class SecondStepForm(Form):
    """The second sign-in step (and the fresh code sensitive actions ask for)."""

    code = StringField(
        "Code from your authenticator app, or a recovery code", CODE, render_kw=CODE_INPUT
    )
    next = HiddenField()


class EnrolForm(Form):
    code = StringField(
        "Code shown by the app",
        [DataRequired(MESSAGES["required"]), Length(max=20, message=MESSAGES["code_format"])],
        render_kw={**CODE_INPUT, "inputmode": "numeric"},
    )


class DisableTwoFactorForm(Form):
    password = PasswordField("Password", PASSWORD, render_kw={"autocomplete": "current-password"})
    code = StringField("Code from your app, or a recovery code", CODE, render_kw=CODE_INPUT)


class RecoveryCodesForm(Form):
    code = StringField("Code from your app", CODE, render_kw=CODE_INPUT)


class ProfileForm(Form):
    email = EmailField("Email", EMAIL, render_kw={"autocomplete": "email"})

    def __init__(self, *args: Any, user_id: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.user_id = user_id

    def validate_email(self, field: EmailField) -> None:
        if models.email_taken(field.data, exclude_id=self.user_id):
            raise ValidationError(MESSAGES["email_taken"])


class _ChoosePasswordForm(Form):
    """A form where a known user chooses a new password: it is checked against who they are."""

    def __init__(self, *args: Any, username: str, email: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.username, self.user_email = username, email

    def check_new_password(self, field: PasswordField) -> None:
        _check_new_password(self, field, self.username, self.user_email)


def _confirm(other: str) -> PasswordField:
    return PasswordField(
        "Confirm new password",
        [DataRequired(MESSAGES["required"]), EqualTo(other, MESSAGES["password_mismatch"])],
        render_kw={"autocomplete": "new-password"},
    )


class PasswordChangeForm(_ChoosePasswordForm):
    current_password = PasswordField(
        "Current password", PASSWORD, render_kw={"autocomplete": "current-password"}
    )
    new_password = PasswordField(
        "New password", NEW_PASSWORD, render_kw={"autocomplete": "new-password"}
    )
    confirm = _confirm("new_password")

    def validate_new_password(self, field: PasswordField) -> None:
        self.check_new_password(field)


class ResetRequestForm(Form):
    email = EmailField("Email", EMAIL, render_kw={"autocomplete": "email"})


class ResetPasswordForm(_ChoosePasswordForm):
    password = PasswordField(
        "New password", NEW_PASSWORD, render_kw={"autocomplete": "new-password"}
    )
    confirm = _confirm("password")

    def validate_password(self, field: PasswordField) -> None:
        self.check_new_password(field)


class ApiKeyForm(Form):
    label = StringField(
        "Label",
        [
            DataRequired(MESSAGES["required"]),
            Length(max=100, message="Use at most 100 characters."),
        ],
        render_kw={"placeholder": "e.g. laptop CLI"},
    )


class AdminUserForm(Form):
    email = EmailField("Email", EMAIL)
    is_active = BooleanField("Active (can log in)")
    is_admin = BooleanField("Administrator")

    def __init__(self, *args: Any, user_id: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.user_id = user_id

    def validate_email(self, field: EmailField) -> None:
        if models.email_taken(field.data, exclude_id=self.user_id):
            raise ValidationError(MESSAGES["email_taken"])


BULK_ACTIONS = [
    SelectChoice("deactivate", "Deactivate"),
    SelectChoice("activate", "Activate"),
    SelectChoice("delete", "Delete"),
]


class BulkActionForm(Form):
    action = SelectField(
        "Action", choices=BULK_ACTIONS, validators=[DataRequired(MESSAGES["required"])]
    )
    user_ids = SelectMultipleField(
        "Users",
        coerce=int,
        validate_choice=False,
        validators=[DataRequired("Select at least one user.")],
    )
    confirmed = HiddenField()
