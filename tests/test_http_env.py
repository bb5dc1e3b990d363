"""The guarded session's proxies and CA bundle from the environment: requests' own, asked once per environment."""

from __future__ import annotations

import ipaddress
import os

import pytest
import requests
import requests.sessions

from actions.http_guard import guarded_session
from actions.http_policy import networks

# Every variable requests' merge reads, so each environment below starts from none of them.
_READ = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "REQUEST_METHOD", "NETRC")

ENVIRONMENTS = [
    {},
    {"HTTP_PROXY": "http://upper:3128"},
    {"HTTP_PROXY": "http://upper:3128", "http_proxy": "http://lower:3128"},  # lower case wins
    {"HTTP_PROXY": "http://upper:3128", "http_proxy": ""},  # an empty lower-case one removes it
    {"Http_Proxy": "http://mixed:3128", "HTTPS_PROXY": "http://secure:3128"},
    {"HTTPS_PROXY": "http://secure:3128", "HTTP_PROXY": "http://plain:3128",
     "NO_PROXY": "example.com, .internal.example,10.0.0.0/8 ,127.0.0.1"},
    {"ALL_PROXY": "socks5://all:1080", "no_proxy": "*"},
    {"all_proxy": "http://all:3128", "no_proxy": "localhost:5000,example.com:8443,[::1]"},
    {"HTTP_PROXY": "http://upper:3128", "NO_PROXY": "example.com", "no_proxy": "other.example"},
    {"HTTP_PROXY": "http://cgi:3128", "REQUEST_METHOD": "GET"},  # a CGI script forgets HTTP_PROXY
    {"http_proxy": "http://cgi:3128", "REQUEST_METHOD": "GET"},  # ...but not http_proxy
    {"REQUESTS_CA_BUNDLE": "/etc/ca/requests.pem", "CURL_CA_BUNDLE": "/etc/ca/curl.pem"},
    {"CURL_CA_BUNDLE": "/etc/ca/curl.pem", "FTP_PROXY": "http://ftp:21", "socks_proxy": "socks5://s:1080"},
    {"REQUESTS_CA_BUNDLE": "", "CURL_CA_BUNDLE": "", "HTTPS_PROXY": "https://user:pass@secure:3128"},
]
URLS = [
    "http://example.com/", "https://EXAMPLE.com:8443/x?y=1", "http://www.example.com/", "http://sub.internal.example/",
    "http://10.1.2.3:8080/", "http://127.0.0.1/", "http://localhost:5000/a", "http://localhost:5001/",
    "https://[::1]:8443/", "http://other.example/", "http://example.com:notaport/",
]
PROXIES = [None, {}, {"no_proxy": "example.com"}, {"http": "http://explicit:8080"}, {"http": None, "all": "http://a:1"}]
VERIFY = [True, None, False, "/etc/ca/mine.pem"]


@pytest.fixture
def environment(monkeypatch):
    """Sets one of ENVIRONMENTS, with every other proxy and CA variable unset."""
    def set_environment(variables: dict[str, str]) -> None:
        for name in list(os.environ):
            if name.lower().endswith("_proxy") or name in _READ:
                monkeypatch.delenv(name)
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
    return set_environment


def merged(session: requests.Session, url: str, proxies: dict | None, verify) -> tuple:
    """The session's merge, and what it left in the proxies it was given (requests adds the environment's to them)."""
    given = None if proxies is None else dict(proxies)
    try:
        answer = session.merge_environment_settings(url, given, None, verify, None)
    except ValueError as error:
        return "raised", str(error)
    return answer, {key: type(value) for key, value in answer.items()}, given


def test_the_merge_is_requests_own_for_every_environment(environment):
    # One test for all: each environment follows the previous one, so an answer kept for one would show in the next.
    guarded, plain = guarded_session(networks(None)), requests.Session()
    for variables in ENVIRONMENTS + ENVIRONMENTS[::-1]:
        environment(variables)
        for url in URLS:
            for proxies in PROXIES:
                for verify in VERIFY:
                    for _ in range(2):  # the second time from what was kept
                        assert merged(guarded, url, proxies, verify) == merged(plain, url, proxies, verify), \
                            (variables, url, proxies, verify)


def test_the_environment_is_read_once_until_it_changes(environment, monkeypatch):
    environment({"HTTP_PROXY": "http://upper:3128", "NO_PROXY": "example.com"})
    asked = []
    ask = requests.sessions.get_environ_proxies

    def counted(url: str, no_proxy: str | None = None) -> dict:
        asked.append(url)
        return ask(url, no_proxy=no_proxy)

    monkeypatch.setattr(requests.sessions, "get_environ_proxies", counted)  # requests', not ours: counted only
    guarded = guarded_session(networks(None))
    for _ in range(3):
        assert guarded.merge_environment_settings("http://other.example/a", {}, None, True, None)["proxies"] \
            == {"http": "http://upper:3128", "no": "example.com"}
    assert len(asked) == 1
    assert guarded.merge_environment_settings("http://example.com/", {}, None, True, None)["proxies"] == {}
    assert len(asked) == 2  # another host is asked about once
    monkeypatch.setenv("HTTP_PROXY", "http://changed:3128")
    assert guarded.merge_environment_settings("http://other.example/b", {}, None, True, None)["proxies"] \
        == {"http": "http://changed:3128", "no": "example.com"}
    assert len(asked) == 3


def test_the_deny_list_is_parsed_once_per_list():
    assert networks(None) is networks(None)
    assert networks(("10.0.0.0/8", "fd00::/8")) is networks(["10.0.0.0/8", "fd00::/8"])
    assert networks("10.0.0.0/8, ,fd00::/8") == networks(("10.0.0.0/8", "fd00::/8"))
    assert networks([ipaddress.ip_network("10.0.0.0/8")]) == networks(["10.0.0.0/8"])  # read through str(), as before
