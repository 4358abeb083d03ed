"""The accounts app's errors: one base, so a caller can catch them all.

AccountsError
 +-- DuplicateUser       the username or email is taken (``field`` says which)
 +-- LastAdminError      the change would leave the site without an active admin
"""

from __future__ import annotations


class AccountsError(Exception):
    """Base of the accounts app's errors."""


class DuplicateUser(AccountsError):
    def __init__(self, field: str) -> None:
        super().__init__(f"{field} is already taken")
        self.field = field


class LastAdminError(AccountsError):
    pass
