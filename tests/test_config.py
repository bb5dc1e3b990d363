"""Settings from the environment: DESIGN section 5 defaults, parsing, and errors naming the variable."""

from __future__ import annotations

import pytest

from app import create_app, start_app
from app.core.config import SECRET_SETTINGS, load_settings, public_settings
from app.errors import ConfigError

# DESIGN.md section 5, as a user reads it.
DESIGN_DEFAULTS = {
    "HOST": "127.0.0.1",
    "PORT": 5001,
    "WORKFLOW_STORAGE_PATH": "./data",
    "WORKFLOW_MAX_CONCURRENT": 5,
    "WORKFLOW_STEP_TIMEOUT": 300,
    "WORKFLOW_RETRY_COUNT": 3,
    "WORKFLOW_RETRY_DELAY": 5,
    "WORKFLOW_MAX_UPLOAD_MB": 25,
    "WORKFLOW_RETENTION_DAYS": 30,
    "WORKFLOW_API_URL": "http://127.0.0.1:5001",
    "IMAP_PORT": 993,
    "IMAP_FOLDER": "INBOX",
    "IMAP_SSL": True,
    "SMTP_PORT": 587,
    "SMTP_SECURITY": "starttls",
    "MAIL_FROM": "pyflow@localhost",
    "EMAIL_POLL_INTERVAL": 30,
    "UPTIME_URL": "http://127.0.0.1:5001/api/health",
    "UPTIME_INTERVAL": 60,
}
UNSET_BY_DEFAULT = ["IMAP_HOST", "IMAP_USER", "IMAP_PASSWORD", "SMTP_HOST", "SMTP_USER", "SMTP_PASSWORD"]


def test_defaults_equal_the_design():
    settings = load_settings({})
    assert {name: settings[name] for name in DESIGN_DEFAULTS} == DESIGN_DEFAULTS
    for name in UNSET_BY_DEFAULT:
        assert not settings[name], name
    assert settings["WORKFLOW_MODULES"] == ()


def test_empty_values_mean_the_default():
    assert load_settings({"PORT": "", "WORKFLOW_MAX_CONCURRENT": ""}) == load_settings({})


@pytest.mark.parametrize(
    ("name", "raw", "value"),
    [
        ("PORT", "8080", 8080),
        ("HOST", "0.0.0.0", "0.0.0.0"),
        ("WORKFLOW_MAX_CONCURRENT", "12", 12),
        ("WORKFLOW_STEP_TIMEOUT", "0.5", 0.5),
        ("WORKFLOW_RETRY_COUNT", "0", 0),
        ("WORKFLOW_RETRY_COUNT", "4.0", 4),
        ("WORKFLOW_RETRY_DELAY", "0", 0.0),
        ("WORKFLOW_MAX_UPLOAD_MB", "0.5", 0.5),
        ("IMAP_SSL", "false", False),
        ("IMAP_SSL", " YES ", True),
        ("IMAP_SSL", "0", False),
        ("SMTP_SECURITY", "SSL", "ssl"),
        ("SMTP_SECURITY", "none", "none"),
        ("WORKFLOW_MODULES", "mine.one, mine.two,", ("mine.one", "mine.two")),
        ("EMAIL_POLL_INTERVAL", "2.5", 2.5),
    ],
)
def test_values_are_parsed(name, raw, value):
    parsed = load_settings({name: raw})[name]
    assert parsed == value
    assert type(parsed) is type(value)


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("PORT", "http"),
        ("PORT", "70000"),
        ("PORT", "-1"),
        ("PORT", "80.5"),
        ("IMAP_PORT", "imaps"),
        ("SMTP_PORT", "99999"),
        ("WORKFLOW_MAX_CONCURRENT", "0"),
        ("WORKFLOW_MAX_CONCURRENT", "2.5"),
        ("WORKFLOW_MAX_CONCURRENT", "many"),
        ("WORKFLOW_STEP_TIMEOUT", "0"),
        ("WORKFLOW_STEP_TIMEOUT", "-3"),
        ("WORKFLOW_STEP_TIMEOUT", "soon"),
        ("WORKFLOW_STEP_TIMEOUT", "nan"),
        ("WORKFLOW_RETRY_COUNT", "-1"),
        ("WORKFLOW_RETRY_COUNT", "three"),
        ("WORKFLOW_RETRY_COUNT", "2.7"),
        ("WORKFLOW_RETRY_COUNT", "inf"),
        ("WORKFLOW_RETRY_DELAY", "-0.1"),
        ("WORKFLOW_RETRY_DELAY", "nan"),
        ("WORKFLOW_MAX_UPLOAD_MB", "0"),
        ("WORKFLOW_MAX_UPLOAD_MB", "inf"),
        ("WORKFLOW_RETENTION_DAYS", "0"),
        ("WORKFLOW_RETENTION_DAYS", "forever"),
        ("IMAP_SSL", "maybe"),
        ("SMTP_SECURITY", "tls"),
        ("EMAIL_POLL_INTERVAL", "0"),
        ("UPTIME_INTERVAL", "-5"),
        ("WORKFLOW_API_URL", "localhost:5001"),
        ("WORKFLOW_API_URL", "http://"),
    ],
)
def test_a_bad_value_names_the_variable_and_the_value(name, raw):
    with pytest.raises(ConfigError) as caught:
        load_settings({name: raw})
    message = str(caught.value)
    assert f"setting {name} must be" in message
    assert repr(raw) in message


def test_create_app_reads_the_environment_and_refuses_bad_values(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKFLOW_STORAGE_PATH", str(tmp_path / "data"))
    monkeypatch.setenv("WORKFLOW_MAX_CONCURRENT", "zero")
    with pytest.raises(ConfigError, match="WORKFLOW_MAX_CONCURRENT must be a positive integer, got 'zero'"):
        start_app(create_app())


def test_create_app_takes_settings_from_the_environment_and_test_config_on_top(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKFLOW_STORAGE_PATH", str(tmp_path / "env"))
    monkeypatch.setenv("WORKFLOW_MAX_CONCURRENT", "7")
    monkeypatch.setenv("WORKFLOW_MAX_UPLOAD_MB", "2")
    monkeypatch.setenv("WORKFLOW_MODULES", "")
    app = start_app(create_app({"WORKFLOW_STORAGE_PATH": str(tmp_path / "data")}))
    try:
        assert app.config["WORKFLOW_MAX_CONCURRENT"] == 7
        assert app.config["WORKFLOW_STORAGE_PATH"] == str(tmp_path / "data")
        assert app.config["MAX_CONTENT_LENGTH"] == 2 * 1024 * 1024
        assert (tmp_path / "data").is_dir()
        assert not (tmp_path / "env").exists()
    finally:
        app.extensions["pyflow"].shutdown(timeout=1)


def test_public_settings_leave_out_passwords():
    settings = load_settings({"SMTP_PASSWORD": "s3cret", "IMAP_PASSWORD": "pw", "SMTP_USER": "bob"})
    public = public_settings(settings)
    assert {"SMTP_PASSWORD", "IMAP_PASSWORD"} <= SECRET_SETTINGS
    assert "SMTP_PASSWORD" not in public and "IMAP_PASSWORD" not in public
    assert public["SMTP_USER"] == "bob"
