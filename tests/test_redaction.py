"""Secrets never reach run records or summaries: which keys count as secret, and how values are replaced."""

from __future__ import annotations

import copy
import io
import json
import logging

import pytest

from actions.base import ActionError, BaseAction
from app.core.binding import BoundWorkflow
from app.core.config import SECRET_SETTINGS, load_settings
from app.core.engine import Engine
from app.core.redaction import (
    LOG_FILTER,
    REDACTED,
    Scrubber,
    ScrubFilter,
    install_log_filter,
    is_secret_key,
    keep_redacted,
    redact,
    secret_values,
    settings_scrubber,
)
from app.storage.json.store import JsonStore
from tests.conftest import TEST_SETTINGS
from workflows.base import Workflow


@pytest.mark.parametrize(
    "key",
    [
        "password", "PASSWORD", "SMTP_PASSWORD", "db.password", "passwd", "pwd", "secret", "client_secret",
        "token", "access_token", "refresh-token", "api_key", "apikey", "API-KEY", "X-Api-Key", "private_key",
        "SECRET_KEY", "aws_secret_access_key", "Authorization", "credentials", "credential", "cookie",
        "accessToken", "clientSecret", "smtpPassword", "apiKey", "secretAccessKey",
        "webhook_url", "slack_webhook_url", "slackWebhookUrl", "WEBHOOK-URL",
        # Added with issue 12: numbered and confirmed passwords, passphrases, database URLs and DSNs, bearer, PINs.
        "password2", "PASSWORD_2", "password_confirm", "passwordHash", "new_password1", "passphrase",
        "ssh_passphrase", "keyPassphrase", "database_url", "DATABASE_URL", "databaseUrl", "WORKFLOW_DATABASE_URL",
        "db_url", "dsn", "SENTRY_DSN", "bearer", "pin", "PIN", "card_pin", "pin_code", "pincode", "private_key",
        "privateKey", "client_secret", "clientSecret", "signing_key", "encryption_key", "broker_url",
        "CELERY_BROKER_URL", "connection_string", "secrets", "x-auth-token", "Proxy-Authorization",
        *sorted(SECRET_SETTINGS),
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
        # Ordinary words that contain a secret word: none of them is redacted.
        "pinned", "spinner", "opinion", "shipping", "pinpoint", "pin_count", "passenger", "compass", "bypass",
        "passive", "description", "tokenizer", "token_type", "tokens_used", "keyword", "primary_key", "sort_key",
        "database", "database_name", "db_host", "bearing", "input", "spin", "dsname", "passport", "url_path",
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


def test_every_secret_setting_has_a_secret_name():
    """The shell step strips variables by this rule: it must catch every secret setting."""
    assert all(is_secret_key(name) for name in SECRET_SETTINGS)


def test_secret_values_are_what_redact_hides():
    value = {"user": "bob", "password": "hunter22", "pin": 4321, "ok": True,
             "nested": [{"credentials": {"user": "svc", "key": "k-998877"}}], "token": REDACTED, "secret": ""}
    assert secret_values(value) == {"hunter22", "4321", "svc", "k-998877"}
    assert secret_values(None) == set()


def test_scrubber_replaces_values_at_any_depth_keys_included():
    scrubber = Scrubber(["s3cr3t-value", "xy"])
    value = {"text": "got s3cr3t-value twice: s3cr3t-value", "list": ["a", {"s3cr3t-value": 1}], "n": 3}
    assert scrubber.scrub(value) == {"text": "got *** twice: ***", "list": ["a", {"***": 1}], "n": 3}
    assert scrubber.text("xy stays: shorter than MIN_SCRUB_LENGTH") == "xy stays: shorter than MIN_SCRUB_LENGTH"


def test_scrubber_returns_the_same_object_when_nothing_matched():
    value = {"a": ["b", {"c": "d"}]}
    assert Scrubber(["zzzz"]).scrub(value) is value
    assert Scrubber().scrub(value) is value
    assert not Scrubber([None, "", "abc"])


@pytest.mark.parametrize(
    ("secret", "echoed"),
    [
        ("Bearer tok-123456", "invalid token tok-123456"),  # the credential without its scheme
        ("a b/c?d=é", "url a%20b%2Fc%3Fd%3D%C3%A9"),  # URL-quoted
        ('quo"te\\x', 'json quo\\"te\\\\x'),  # JSON-escaped
        ("<b>&amp", "html &lt;b&gt;&amp;amp"),  # HTML-escaped
    ],
)
def test_scrubber_catches_a_secret_as_it_is_echoed(secret, echoed):
    assert Scrubber([secret]).text(echoed).endswith(REDACTED)


def test_extended_scrubber_keeps_the_original_unchanged():
    base = Scrubber(["first-secret"])
    more = base.extended(["second-secret"])
    assert more.text("first-secret second-secret") == "*** ***"
    assert base.text("first-secret second-secret") == "*** second-secret"


def test_settings_scrubber_holds_only_secret_settings():
    scrubber = settings_scrubber({"SMTP_PASSWORD": "smtp-pw-1", "SMTP_USER": "mailer-user", "IMAP_PASSWORD": ""})
    assert scrubber.text("smtp-pw-1 mailer-user") == "*** mailer-user"


def test_keep_redacted_puts_stored_secrets_back():
    stored = {"trigger": {"type": "webhook", "secret": "whsec-1"},
              "steps": [{"name": "a", "config": {"headers": {"Authorization": "Bearer t-1"}, "url": "http://x"}}]}
    edited = {"trigger": {"type": "webhook", "secret": REDACTED},
              "steps": [{"name": "a", "config": {"headers": {"Authorization": REDACTED}, "url": "http://y"}},
                        {"name": "b", "config": {"password": REDACTED}}]}
    assert keep_redacted(edited, stored) == {
        "trigger": {"type": "webhook", "secret": "whsec-1"},
        "steps": [{"name": "a", "config": {"headers": {"Authorization": "Bearer t-1"}, "url": "http://y"}},
                  {"name": "b", "config": {"password": REDACTED}}]}  # nothing stored there: stays as sent


def test_keep_redacted_takes_a_new_secret_and_ignores_non_secret_stars():
    stored = {"secret": "old-secret", "note": "old"}
    assert keep_redacted({"secret": "new-secret", "note": REDACTED}, stored) == {"secret": "new-secret",
                                                                                  "note": REDACTED}


def test_log_filter_scrubs_message_args_and_traceback(caplog):
    logger = logging.getLogger("tests.redaction")
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(ScrubFilter(Scrubber(["smtp-secret-99"])))
    logger.addHandler(handler)
    try:
        logger.warning("login with %s failed", "smtp-secret-99")
        try:
            raise ValueError("bad password smtp-secret-99")
        except ValueError:
            logger.exception("during %s", "smtp-secret-99")
    finally:
        logger.removeHandler(handler)
    text = handler.stream.getvalue()
    assert "smtp-secret-99" not in text
    assert "login with *** failed" in text and "ValueError: bad password ***" in text


def test_install_log_filter_reaches_root_handlers():
    handler = logging.StreamHandler(io.StringIO())
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        install_log_filter({"WORKFLOW_API_TOKEN": "api-token-777"})
        install_log_filter({"WORKFLOW_API_TOKEN": "api-token-777"})  # idempotent
        assert handler.filters.count(LOG_FILTER) == 1
        logging.getLogger("tests.redaction.root").error("token api-token-777")
    finally:
        root.removeHandler(handler)
        install_log_filter({})
    assert handler.stream.getvalue() == "token ***\n"


def test_a_scrubber_with_many_values_replaces_each_whole():
    values = [f"secret-number-{index:03d}" for index in range(40)] + ["secret-number-001-and-more"]
    scrubber = Scrubber(values)
    assert scrubber.text("a secret-number-007 b secret-number-001-and-more c") == "a *** b *** c"
    text = "nothing to hide"
    assert scrubber.text(text) is text


# -- the engine scrubs every record it writes -----------------------------------------
class _Quote(BaseAction):
    """Returns, or fails with, a text quoting whatever it was given."""

    def __init__(self, name: str, text: str = "", fail: bool = False, **options):
        super().__init__(name, **options)
        self.text, self.fail = text, fail

    def execute(self, data_store: dict) -> dict:
        logging.getLogger("tests.redaction.quote").warning("saw %s", self.text)
        if self.fail:
            raise ActionError(f"remote said: {self.text}", retryable=False)
        return {"echo": self.text, "token": "fetched-token-55"}


class _Quoting(Workflow):
    name = "quoting"
    actions = [
        _Quote("fetch", text="plain"),
        _Quote("show", text="{{ steps.fetch.token }} / {{ inputs.user_password }} / {{ settings.MAIL_FROM }}"),
        _Quote("fail", text="{{ inputs.user_password }} and the token {{ steps.fetch.token }}", fail=True),
    ]


def test_the_engine_scrubs_results_errors_and_logs(tmp_path):
    settings = {**load_settings({}), **TEST_SETTINGS, "SMTP_PASSWORD": "smtp-secret-31"}
    engine = Engine(JsonStore(tmp_path / "data"), settings)
    bound = BoundWorkflow.bind(_Quoting, settings, engine.renderer)
    run, _ = engine.submit(bound, {"user_password": "in-pw-8642", "note": "smtp-secret-31"})
    assert engine.wait(run["id"], 10)
    stored = engine.store.get_run(run["id"])
    steps = {step["name"]: step for step in stored["steps"]}
    assert stored["trigger_data"] == {"user_password": "***", "note": "***"}
    assert steps["fetch"]["result"] == {"echo": "plain", "token": "***"}
    assert steps["show"]["result"]["echo"] == "*** / *** / pyflow@localhost"
    assert steps["fail"]["error"] == "remote said: *** and the token ***"
    assert stored["error"] == "step 'fail' failed: remote said: *** and the token ***"
    logs = json.dumps(engine.store.get_logs(run["id"]))
    assert "saw *** / ***" in logs
    for secret in ("in-pw-8642", "fetched-token-55", "smtp-secret-31"):
        assert secret not in json.dumps(stored) + logs
    engine.shutdown()
