"""Real PostgreSQL, Redis and RabbitMQ on loopback for the tests that need them (DESIGN section 11).

Each service's URL comes from PYFLOW_TEST_POSTGRES_URL, PYFLOW_TEST_REDIS_URL or
PYFLOW_TEST_AMQP_URL (defaults: this project's machines). Where a service cannot
be reached the test is skipped with a message saying what to start, except under
PYFLOW_REQUIRE_SERVICES=1 (CI), where it fails: a skip must not hide a broken setup.
"""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

POSTGRES_URL = os.environ.get("PYFLOW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("PYFLOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("PYFLOW_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")

HOW_TO_START = {
    "postgresql": "start PostgreSQL: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    "redis": 'start Redis: redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save ""',
    "amqp": "start RabbitMQ: rabbitmq-server -detached",
}


def required() -> bool:
    """True under PYFLOW_REQUIRE_SERVICES=1 (CI): an unreachable service fails the test instead of skipping it."""
    return os.environ.get("PYFLOW_REQUIRE_SERVICES", "").strip().lower() in ("1", "true", "yes")


def unavailable(what: str, url: str, why: str) -> None:
    """Skip (under PYFLOW_REQUIRE_SERVICES=1: fail) naming the service, where it was looked for, how to start it."""
    parts = urlsplit(url)
    message = f"{what} is not reachable at {parts.hostname}:{parts.port} ({why}); {HOW_TO_START[what]}"
    if required():
        pytest.fail(f"PYFLOW_REQUIRE_SERVICES=1: {message}", pytrace=False)
    pytest.skip(message)


def reachable(url: str, default_port: int) -> str | None:
    """None when a TCP connection to the URL's host and port opens, else why not."""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=2):
            return None
    except OSError as error:
        return error.strerror or str(error)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The URL of a fresh, empty PostgreSQL database of this test's own, dropped afterwards."""
    try:
        import psycopg
    except ImportError:
        if required():
            pytest.fail("PYFLOW_REQUIRE_SERVICES=1: psycopg is missing; pip install -r requirements-distributed.txt",
                        pytrace=False)
        pytest.skip("psycopg is missing: pip install -r requirements-distributed.txt")
    why = reachable(POSTGRES_URL, 5432)
    if why:
        unavailable("postgresql", POSTGRES_URL, why)
    name = f"pyflow_test_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as error:
        unavailable("postgresql", POSTGRES_URL, str(error).strip().splitlines()[0])
    parts = urlsplit(POSTGRES_URL)
    yield urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _celery_installed() -> None:
    """Skip (under PYFLOW_REQUIRE_SERVICES=1: fail) when celery, which the broker tests drive, is missing."""
    try:
        import celery  # noqa: F401
    except ImportError:
        if required():
            pytest.fail("PYFLOW_REQUIRE_SERVICES=1: celery is missing; pip install -r requirements-distributed.txt",
                        pytrace=False)
        pytest.skip("celery is missing: pip install -r requirements-distributed.txt")


@pytest.fixture
def redis_url() -> str:
    """The URL of the test Redis; tests keep apart by queue name (``unique_queue``)."""
    _celery_installed()
    why = reachable(REDIS_URL, 6379)
    if why:
        unavailable("redis", REDIS_URL, why)
    return REDIS_URL


@pytest.fixture
def amqp_url() -> str:
    """The URL of the test RabbitMQ; tests keep apart by queue name (``unique_queue``)."""
    _celery_installed()
    why = reachable(AMQP_URL, 5672)
    if why:
        unavailable("amqp", AMQP_URL, why)
    return AMQP_URL


def unique_queue() -> str:
    """A queue name no other test (nor helper) uses."""
    return f"pyflow-test-{uuid.uuid4().hex[:12]}"


# Redis databases 1-15 that tests may take; a test claims one with a key in database 0 (SET NX) and frees it after.
_REDIS_DATABASES = range(1, 16)
_REDIS_CLAIM = "pyflow:test-database:{}"


@pytest.fixture
def redis_database_url() -> Iterator[str]:
    """The URL of a Redis database (1-15) of this test's own, empty, flushed afterwards.

    For processes whose queue name the test cannot choose (``run.py worker``): they keep apart by database.
    """
    _celery_installed()
    import redis

    why = reachable(REDIS_URL, 6379)
    if why:
        unavailable("redis", REDIS_URL, why)
    parts = urlsplit(REDIS_URL)
    token = uuid.uuid4().hex
    claims = redis.Redis.from_url(urlunsplit((parts.scheme, parts.netloc, "/0", "", "")))
    try:
        # Tests in parallel (or other checkouts on this machine) never share a database: a claim lasts an hour at most.
        number = next((n for n in _REDIS_DATABASES if claims.set(_REDIS_CLAIM.format(n), token, nx=True, ex=3600)),
                      None)
    except redis.RedisError as error:
        unavailable("redis", REDIS_URL, str(error).strip().splitlines()[0])
    if number is None:
        pytest.fail(f"every Redis database 1-15 at {parts.hostname}:{parts.port} is claimed by a test "
                    f"(keys {_REDIS_CLAIM.format('N')}); delete stale claims", pytrace=False)
    url = urlunsplit((parts.scheme, parts.netloc, f"/{number}", "", ""))
    redis.Redis.from_url(url).flushdb()
    try:
        yield url
    finally:
        # Redis may have been restarted (and emptied) by the test: the claim may already be gone.
        try:
            redis.Redis.from_url(url).flushdb()
            if claims.get(_REDIS_CLAIM.format(number)) == token.encode():
                claims.delete(_REDIS_CLAIM.format(number))
        except redis.RedisError:
            pass
        claims.close()


@pytest.fixture
def amqp_vhost_url() -> Iterator[str]:
    """The URL of a RabbitMQ virtual host of this test's own (made with rabbitmqctl), deleted afterwards.

    For processes whose queue name the test cannot choose (``run.py worker``): they keep apart by virtual host.
    """
    _celery_installed()
    why = reachable(AMQP_URL, 5672)
    if why:
        unavailable("amqp", AMQP_URL, why)
    parts = urlsplit(AMQP_URL)
    vhost = f"pyflow_test_{uuid.uuid4().hex[:12]}"
    user = parts.username or "guest"
    try:
        subprocess.run(["rabbitmqctl", "add_vhost", vhost], check=True, capture_output=True, timeout=60)
        subprocess.run(["rabbitmqctl", "set_permissions", "-p", vhost, user, ".*", ".*", ".*"], check=True,
                       capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as error:
        # Without rabbitmqctl (not root, RabbitMQ on another host) the tests share the configured vhost.
        if isinstance(error, subprocess.CalledProcessError):
            subprocess.run(["rabbitmqctl", "delete_vhost", vhost], capture_output=True, timeout=60)
        yield AMQP_URL
        return
    try:
        yield urlunsplit((parts.scheme, parts.netloc, f"/{vhost}", parts.query, parts.fragment))
    finally:
        subprocess.run(["rabbitmqctl", "delete_vhost", vhost], capture_output=True, timeout=60)


@pytest.fixture
def tesseract() -> str:
    """The path of the tesseract program the OCR tests run; skipped (CI: failed) when it is not installed."""
    import shutil

    found = shutil.which("tesseract")
    if found is None:
        message = "tesseract is not installed: apt-get install tesseract-ocr"
        if required():
            pytest.fail(f"PYFLOW_REQUIRE_SERVICES=1: {message}", pytrace=False)
        pytest.skip(message)
    return found
