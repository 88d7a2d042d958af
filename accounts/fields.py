"""A model field whose value is encrypted in the database and plaintext in Python.

The column holds a Fernet token; reading the attribute gives the plaintext, so secrets never
reach SQL, dumps or backups in clear. Forms must treat these fields as write-only (see
``accounts.forms.SecretField``); templates never render them.
"""

from __future__ import annotations

from django.db import models

from accounts import crypto

_PREFIX = "fernet:"


class EncryptedTextField(models.TextField):
    description = "Text encrypted at rest with the portal's MultiFernet keys"

    def from_db_value(self, value, expression, connection):
        if value is None or value == "":
            return value
        if not value.startswith(_PREFIX):
            raise crypto.DecryptionFailed(f"{self.model.__name__}.{self.name} holds an unencrypted value")
        return crypto.decrypt(value[len(_PREFIX):])

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        if value is None or value == "":
            return value
        return _PREFIX + crypto.encrypt(value)


def encrypted_fields() -> list[tuple[type[models.Model], list[str]]]:
    """Every concrete model with EncryptedTextFields, for key rotation."""
    from django.apps import apps

    found = []
    for model in apps.get_models():
        names = [f.name for f in model._meta.concrete_fields if isinstance(f, EncryptedTextField)]
        if names:
            found.append((model, names))
    return found
