"""Settings come from the environment, fail loudly on bad values, and pass the deploy checks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from legacyflo.env import ImproperEnv, env_bool, env_int, env_int_or_off, env_list, env_str

ROOT = Path(__file__).resolve().parent.parent
PROD_ENV = {
    "PATH": os.environ["PATH"],
    "DEBUG": "0",
    "SECRET_KEY": "x" * 20 + "production-like-secret-key-with-enough-entropy-0123456789",
    "LEGACYFLO_ENCRYPTION_KEYS": "c2lnbmluZy1rZXktb25lIWVuY3J5cHQta2V5LW9uZSE=",
    "ALLOWED_HOSTS": "legacyflo.example.com",
    "DATABASE_URL": "sqlite:////tmp/legacyflo-deploy-check.sqlite3",
}


def manage(*args, env):
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True)


def test_typed_helpers(monkeypatch, tmp_path):
    monkeypatch.setenv("X_BOOL", "yes")
    monkeypatch.setenv("X_INT", "42")
    monkeypatch.setenv("X_LIST", "a, b,,c")
    assert env_bool("X_BOOL") is True and env_int("X_INT", 1) == 42 and env_list("X_LIST") == ["a", "b", "c"]
    monkeypatch.setenv("X_BOOL", "maybe")
    with pytest.raises(ImproperEnv, match="not a boolean"):
        env_bool("X_BOOL")
    monkeypatch.setenv("X_INT", "4x")
    with pytest.raises(ImproperEnv, match="not an integer"):
        env_int("X_INT", 1)
    secret = tmp_path / "secret"
    secret.write_text("from-a-file\n")
    monkeypatch.setenv("X_SECRET_FILE", str(secret))
    assert env_str("X_SECRET") == "from-a-file"


def test_a_size_that_can_be_off(monkeypatch):
    assert env_int_or_off("X_SPLIT", minimum=1024) == 0
    for value, expected in (("0", 0), ("1024", 1024), ("", 0)):
        monkeypatch.setenv("X_SPLIT", value)
        assert env_int_or_off("X_SPLIT", minimum=1024) == expected
    for bad in ("1023", "-1"):
        monkeypatch.setenv("X_SPLIT", bad)
        with pytest.raises(ImproperEnv, match="X_SPLIT"):
            env_int_or_off("X_SPLIT", minimum=1024)


def test_zip_split_setting_fails_loudly_on_a_tiny_size():
    result = manage("check", env={**PROD_ENV, "LEGACYFLO_ZIP_SPLIT_BYTES": "1000"})
    assert result.returncode != 0 and "LEGACYFLO_ZIP_SPLIT_BYTES=1000 must be 0 (off) or at least" in result.stderr


def test_production_settings_pass_check_deploy():
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=PROD_ENV)
    assert result.returncode == 0, result.stdout + result.stderr


def test_missing_secrets_fail_loudly():
    env = {k: v for k, v in PROD_ENV.items() if k != "LEGACYFLO_ENCRYPTION_KEYS"}
    result = manage("check", env=env)
    assert result.returncode != 0 and "LEGACYFLO_ENCRYPTION_KEYS is not set" in result.stderr
    env = {k: v for k, v in PROD_ENV.items() if k != "SECRET_KEY"}
    assert "SECRET_KEY is not set" in manage("check", env=env).stderr


def test_bad_client_ip_settings_fail_loudly():
    bad_header = manage("check", env={**PROD_ENV, "LEGACYFLO_CLIENT_IP_HEADER": "X-Forwarded-For: 1.2.3.4"})
    assert bad_header.returncode != 0 and "is not an HTTP header name" in bad_header.stderr
    no_proxies = manage("check", env={**PROD_ENV, "LEGACYFLO_TRUSTED_PROXY_COUNT": "0"})
    assert no_proxies.returncode != 0 and "LEGACYFLO_TRUSTED_PROXY_COUNT=0 must be at least 1" in no_proxies.stderr
    fine = manage("check", env={**PROD_ENV, "LEGACYFLO_CLIENT_IP_HEADER": "X-Real-IP"})
    assert fine.returncode == 0, fine.stderr


def test_a_portal_principal_that_is_not_an_iam_arn_fails_loudly():
    bad = manage("check", env={**PROD_ENV, "LEGACYFLO_AWS_PRINCIPAL_ARN": "legacyflo-portal"})
    assert bad.returncode != 0 and "is not the ARN of an IAM role or user" in bad.stderr
    fine = manage("check", env={**PROD_ENV, "LEGACYFLO_AWS_PRINCIPAL_ARN": "arn:aws:iam::123456789012:role/legacyflo"})
    assert fine.returncode == 0, fine.stderr
