"""Encryption of credentials at rest with MultiFernet.

``LEGACYFLO_ENCRYPTION_KEYS`` lists Fernet keys newest first: the first encrypts, every key
decrypts, so an operator rotates by prepending a new key and running
``manage.py credentials_rotate`` (which re-encrypts every stored secret with the newest key),
then dropping the old key.
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


class DecryptionFailed(Exception):
    """No configured key decrypts the value: a key was dropped before rotation finished."""


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    try:
        return MultiFernet([Fernet(key.encode()) for key in keys])
    except (ValueError, TypeError) as exc:
        raise ImproperlyConfigured(
            "LEGACYFLO_ENCRYPTION_KEYS holds a value that is not a Fernet key (32 url-safe base64 bytes)"
        ) from exc


def fernet() -> MultiFernet:
    return _fernet(tuple(settings.LEGACYFLO_ENCRYPTION_KEYS))


def encrypt(plaintext: str) -> str:
    return fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return fernet().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise DecryptionFailed("a stored secret cannot be decrypted with the configured keys") from exc

