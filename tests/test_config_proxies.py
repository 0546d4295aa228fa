"""HTTP proxies read from the environment as curl reads them, and which URLs bypass them."""

from __future__ import annotations

import pytest

from agent.config.proxies import DEFAULT_PORT, Proxies, Proxy, read_proxies
from agent.config.secret import Secret
from agent.errors import ConfigError

CORP = Proxy("proxy.corp", 3128)


def test_no_variable_set_means_no_proxy() -> None:
    proxies = read_proxies({"PATH": "/usr/bin", "https_proxy": "  "})
    assert proxies == Proxies()
    assert proxies.for_url("https://api.example.com/v1") is None


def test_each_scheme_has_its_variable_lower_case_first_and_all_proxy_fills_in() -> None:
    env = {
        "https_proxy": "http://low.corp:1",
        "HTTPS_PROXY": "http://up.corp:2",
        "ALL_PROXY": "http://all.corp:3",
    }
    proxies = read_proxies(env)
    assert proxies.https == Proxy("low.corp", 1)
    assert proxies.http == Proxy("all.corp", 3)


def test_a_proxy_without_scheme_or_port_is_http_on_curls_default_port() -> None:
    assert read_proxies({"http_proxy": "proxy.corp"}).http == Proxy("proxy.corp", DEFAULT_PORT)


def test_credentials_in_the_proxy_url_become_proxy_authorization() -> None:
    proxy = read_proxies({"https_proxy": "http://me%40corp:p%3Ass@proxy.corp:3128"}).https
    assert proxy == Proxy("proxy.corp", 3128, "me@corp", Secret("p:ss"))
    assert proxy is not None
    assert proxy.authorization() == "Basic bWVAY29ycDpwOnNz"  # base64 of me@corp:p:ss
    assert "p:ss" not in repr(proxy)
    assert proxy.url == "http://proxy.corp:3128"


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("HTTPS_PROXY", "socks5://me:hunter2@proxy.corp:1080", "only http:// proxies"),
        ("https_proxy", "https://me:hunter2@proxy.corp", "only http:// proxies"),
        ("http_proxy", "http://me:hunter2@proxy.corp:port", "port is not a number"),
        ("ALL_PROXY", "http://me:hunter2@:3128", "names no host"),
    ],
)
def test_a_proxy_the_agent_cannot_use_names_the_variable_and_hides_the_password(
    variable: str, value: str, said: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        read_proxies({variable: value})
    assert caught.value.key == variable
    assert said in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_https_and_http_urls_take_their_own_proxy() -> None:
    proxies = Proxies(https=CORP, http=Proxy("plain.corp", 8080))
    assert proxies.for_url("https://api.example.com/x") == CORP
    assert proxies.for_url("http://api.example.com/x") == Proxy("plain.corp", 8080)


@pytest.mark.parametrize(
    "url",
    ["https://localhost:8443/x", "https://127.0.0.1/x", "https://127.8.9.10/x", "https://[::1]/x"],
)
def test_loopback_is_never_proxied(url: str) -> None:
    assert Proxies(https=CORP).for_url(url) is None


@pytest.mark.parametrize(
    ("no_proxy", "url", "direct"),
    [
        ("*", "https://anything.example/x", True),
        ("example.com", "https://example.com/x", True),
        ("example.com", "https://files.example.com/x", True),
        (".example.com", "https://files.example.com/x", True),
        ("*.example.com", "https://files.example.com/x", True),
        ("example.com", "https://badexample.com/x", False),
        ("Example.COM", "https://FILES.example.com/x", True),
        ("10.0.0.0/8", "https://10.1.2.3/x", True),
        ("10.0.0.0/8", "https://11.1.2.3/x", False),
        ("10.0.0.0/8", "https://ten.example/x", False),
        ("192.0.2.7", "https://192.0.2.7/x", True),
        ("fd00::/8", "https://[fd12::1]/x", True),
        ("files.example.com:8443", "https://files.example.com:8443/x", True),
        ("files.example.com:8443", "https://files.example.com/x", False),
        ("[fd12::1]:443", "https://[fd12::1]/x", True),
        ("a.example, b.example", "https://b.example/x", True),
    ],
)
def test_no_proxy_entries(no_proxy: str, url: str, direct: bool) -> None:
    proxies = read_proxies({"https_proxy": "http://proxy.corp:3128", "NO_PROXY": no_proxy})
    assert (proxies.for_url(url) is None) is direct
