"""Write the development environment file `make run` sources (git-ignored, created once).

Each line only fills a variable the user has not set, so exported settings always win.
Run: python -m legacyflo.devkeys var/dev.env
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

from cryptography.fernet import Fernet


def dev_env_text() -> str:
    values = {
        "DEBUG": "1",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "LEGACYFLO_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        # A development portal backs up local test servers, so internal addresses are allowed.
        "LEGACYFLO_ALLOW_PRIVATE_NETWORKS": "1",
        "LEGACYFLO_LOCAL_S3_ACCESS_KEY": "LOCAL" + secrets.token_hex(8).upper(),
        "LEGACYFLO_LOCAL_S3_SECRET_KEY": secrets.token_urlsafe(30),
    }
    lines = ["# Written by `make run` for development only. Never use these values in production."]
    lines += [f': "${{{name}:={value}}}"' for name, value in values.items()]
    return "\n".join(lines) + "\n"


def main(path: str) -> None:
    target = Path(path)
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(dev_env_text())
    target.chmod(0o600)
    print(f"Wrote development keys to {target}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "var/dev.env")
