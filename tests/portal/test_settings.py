"""Settings come from the environment; a bad value stops start-up with a message saying what to fix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from portal.env import Env, database_from_url, validate_redis_url

ROOT = Path(__file__).resolve().parents[2]


def test_bool_accepts_common_words_and_refuses_others() -> None:
    env = Env({"A": "yes", "B": "Off", "C": "maybe"})
    assert env.bool("A") is True
    assert env.bool("B") is False
    assert env.bool("MISSING", True) is True
    with pytest.raises(
        ImproperlyConfigured, match=r"C='maybe' is not a boolean; use one of true/false"
    ):
        env.bool("C")


def test_int_checks_range() -> None:
    env = Env({"PORT": "70000", "N": "x"})
    with pytest.raises(ImproperlyConfigured, match="PORT=70000 is too large; the maximum is 65535"):
        env.int("PORT", 8000, minimum=1, maximum=65535)
    with pytest.raises(ImproperlyConfigured, match="N='x' is not a whole number"):
        env.int("N", 1)


def test_list_and_choice() -> None:
    env = Env({"HOSTS": " a.example , ,b.example", "ROLE": "operator", "BAD": "root"})
    assert env.list("HOSTS") == ["a.example", "b.example"]
    assert env.choice("ROLE", ["Admin", "Operator", "Viewer"], "Viewer") == "Operator"
    with pytest.raises(
        ImproperlyConfigured, match="BAD='root' is not one of: Admin, Operator, Viewer"
    ):
        env.choice("BAD", ["Admin", "Operator", "Viewer"], "Viewer")


def test_secret_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    assert Env({"TOKEN_FILE": str(secret)}).secret("TOKEN") == "s3cret"
    assert Env({"TOKEN": "direct", "TOKEN_FILE": str(secret)}).secret("TOKEN") == "direct"
    with pytest.raises(ImproperlyConfigured, match="TOKEN_FILE='/nope' cannot be read"):
        Env({"TOKEN_FILE": "/nope"}).secret("TOKEN")


def test_role_rules_mapping() -> None:
    env = Env(
        {"ROLE_RULES": "Boss@X.com=admin, x.com=Viewer", "BAD": "x.com", "WORSE": "x.com=king"}
    )
    assert env.mapping("ROLE_RULES", ["Admin", "Viewer"]) == {
        "boss@x.com": "Admin",
        "x.com": "Viewer",
    }
    with pytest.raises(ImproperlyConfigured, match="not of the form key=value"):
        env.mapping("BAD", ["Admin"])
    with pytest.raises(ImproperlyConfigured, match="'king' in 'x.com=king' is not one of"):
        env.mapping("WORSE", ["Admin"])


def test_database_and_redis_urls() -> None:
    config = database_from_url("postgresql://u:p@db.internal:5432/portal")
    assert (config["HOST"], config["PORT"], config["NAME"], config["USER"]) == (
        "db.internal",
        5432,
        "portal",
        "u",
    )
    socket = database_from_url("postgresql://postgres@/portal?host=/run/pg")
    assert socket["HOST"] == "/run/pg"
    with pytest.raises(ImproperlyConfigured, match="must be a PostgreSQL URL"):
        database_from_url("mysql://x/y")
    with pytest.raises(ImproperlyConfigured, match="must be a Redis URL"):
        validate_redis_url("http://redis")


def _check(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    full_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("DEBUG", "GOOGLE", "PORTAL_ADMIN"))
    }
    full_env.update(
        {
            "DATABASE_URL": os.environ["PORTAL_TEST_DATABASE_URL"],
            "REDIS_URL": os.environ["PORTAL_TEST_REDIS_URL"],
            **env,
        }
    )
    return subprocess.run(
        [sys.executable, "manage.py", "check", *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DEBUG": "perhaps"}, "DEBUG='perhaps' is not a boolean"),
        ({"PORT": "http"}, "PORT='http' is not a whole number"),
        ({"ALERT_WEBHOOK_URL": "hooks.example.com"}, "ALERT_WEBHOOK_URL must be an http"),
        ({"METRICS_SCRAPE_INTERVAL_SECONDS": "1"}, "METRICS_SCRAPE_INTERVAL_SECONDS"),
        ({"DEFAULT_ROLE": "Owner"}, "DEFAULT_ROLE='Owner' is not one of: Admin, Operator, Viewer"),
        ({"GOOGLE_OAUTH2_KEY": "id"}, "GOOGLE_OAUTH2_KEY is set but GOOGLE_OAUTH2_SECRET is not"),
        (
            {"GOOGLE_OAUTH2_KEY": "id", "GOOGLE_OAUTH2_SECRET": "s"},
            "GOOGLE_ALLOWED_DOMAINS is empty",
        ),
        (
            {"PORTAL_ADMIN_EMAIL": "a@b.c"},
            "Set PORTAL_ADMIN_EMAIL and PORTAL_ADMIN_PASSWORD together",
        ),
        ({"SECRET_KEY": "short"}, "SECRET_KEY is too short"),
        ({"DATABASE_URL": "sqlite:///x.db"}, "DATABASE_URL must be a PostgreSQL URL"),
    ],
)
def test_bad_environment_stops_start_up_with_a_clear_message(
    env: dict[str, str], message: str
) -> None:
    result = _check(env)
    assert result.returncode != 0
    assert message in result.stderr


def test_check_deploy_is_clean_with_production_variables() -> None:
    result = _check(
        {
            "SECRET_KEY": "x8#kq2$Lm9!vR4pZ7@wT1&yN6^bC3*eH5(jU0)sF-gD+aQ=iO_lK",
            "HTTPS": "true",
            "ALLOWED_HOSTS": "portal.waooaw.com",
            "CSRF_TRUSTED_ORIGINS": "https://portal.waooaw.com",
        },
        "--deploy",
        "--fail-level",
        "WARNING",
    )
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_debug_is_off_unless_asked() -> None:
    from django.conf import settings

    assert settings.DEBUG is False
