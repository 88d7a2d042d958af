"""pytest plugin (loaded with ``-p legacyflo.pytest_env``) that gives tests their environment.

It runs before pytest-django imports the settings, so the settings module stays strict (no
built-in fallback secrets) while tests need no exported variables.
"""

import os

os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-production-0123456789")
# Two keys: tests encrypt with the first and prove the second still decrypts after rotation.
os.environ.setdefault(
    "LEGACYFLO_ENCRYPTION_KEYS",
    "c2lnbmluZy1rZXktb25lIWVuY3J5cHQta2V5LW9uZSE=,c2lnbmluZy1rZXktdHdvIWVuY3J5cHQta2V5LXR3byE=",
)
os.environ.setdefault("LEGACYFLO_ALLOW_PRIVATE_NETWORKS", "1")
os.environ.setdefault("DEBUG", "0")
os.environ.setdefault("LEGACYFLO_HTTPS", "0")
os.environ.setdefault("LEGACYFLO_MANIFEST_STATIC", "0")
os.environ.setdefault("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver")
