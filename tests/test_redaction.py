"""Secrets never reach run records or summaries: which keys count as secret, and how values are replaced."""

from __future__ import annotations

import copy

import pytest

from app.redaction import REDACTED, is_secret_key, redact


@pytest.mark.parametrize(
    "key",
    [
        "password", "PASSWORD", "SMTP_PASSWORD", "db.password", "passwd", "pwd", "secret", "client_secret",
        "token", "access_token", "refresh-token", "api_key", "apikey", "API-KEY", "X-Api-Key", "private_key",
        "SECRET_KEY", "aws_secret_access_key", "Authorization", "credentials", "credential", "cookie",
        "accessToken", "clientSecret", "smtpPassword", "apiKey", "secretAccessKey",
        "webhook_url", "slack_webhook_url", "slackWebhookUrl", "WEBHOOK-URL",
    ],
)
def test_secret_keys(key):
    assert is_secret_key(key)


@pytest.mark.parametrize(
    "key",
    [
        "user", "username", "passwords_changed", "max_tokens", "maxTokens", "tokenCount", "token_count", "monkey",
        "keyboard", "secretary", "author", "cookies_enabled", "key", "status_code", "", 42, None, ("password",),
        "url", "webhook", "webhook_urls_count",
    ],
)
def test_ordinary_keys(key):
    assert not is_secret_key(key)


def test_secrets_are_replaced_at_any_depth():
    value = {
        "user": "bob",
        "password": "hunter2",
        "nested": {"api_key": "k-123", "list": [{"token": "t-1"}, {"plain": "ok"}], "tuple": ({"secret": "s"},)},
        "headers": {"Authorization": "Bearer abc", "X-Api-Key": "xyz", "Accept": "application/json"},
    }
    original = copy.deepcopy(value)
    assert redact(value) == {
        "user": "bob",
        "password": REDACTED,
        "nested": {
            "api_key": REDACTED, "list": [{"token": REDACTED}, {"plain": "ok"}], "tuple": [{"secret": REDACTED}]
        },
        "headers": {"Authorization": REDACTED, "X-Api-Key": REDACTED, "Accept": "application/json"},
    }
    assert value == original  # the input is never changed


def test_a_secret_key_hides_whatever_it_holds():
    assert redact({"credentials": {"user": "bob", "pass": "x"}, "tokens": ["a"], "token": ["a", "b"]}) == {
        "credentials": REDACTED, "tokens": ["a"], "token": REDACTED}


@pytest.mark.parametrize("empty", [None, ""])
def test_an_empty_secret_stays_visible_as_unset(empty):
    """An unset password shows as unset, which helps a user find a missing setting."""
    assert redact({"password": empty}) == {"password": empty}


@pytest.mark.parametrize(
    "value",
    [{"user": "bob", "list": [1, {"a": "b"}]}, [1, 2, {"c": None}], "password", 42, None, {}],
)
def test_nothing_to_redact_returns_the_same_object(value):
    assert redact(value) is value
