"""HTTP proxies for the sources' traffic, read from the environment as curl reads them.

`https_proxy` serves https URLs (through a `CONNECT` tunnel), `http_proxy` plain http URLs,
`all_proxy` both when the specific one is not set; lower case first, then upper case.
`no_proxy` lists hosts reached directly: `*` for all, a name (which also covers its
subdomains, with or without a leading dot), an IP address or a CIDR range, optionally with
`:port`. Loopback hosts (`localhost`, 127.0.0.0/8, ::1) are always reached directly, as Go's
HTTP client does: a proxy elsewhere cannot reach this machine's loopback. Only `http://`
proxies are supported; `user:password@` in the proxy's URL becomes `Proxy-Authorization`.
A mistake names the variable (exit 78) and never shows the password.
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from agent.config.secret import Secret
from agent.errors import ConfigError

DEFAULT_PORT = 1080  # curl's, for a proxy URL without a port
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


@dataclass(frozen=True, slots=True)
class Proxy:
    """One HTTP proxy: where it listens and the credentials it wants, if any."""

    host: str
    port: int
    username: str | None = None
    password: Secret | None = None

    @property
    def url(self) -> str:
        """The proxy's URL, without credentials."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def authorization(self) -> str | None:
        """The `Proxy-Authorization` header's value (Basic), when credentials were given."""
        if self.username is None:
            return None
        password = "" if self.password is None else self.password.reveal()
        token = base64.b64encode(f"{self.username}:{password}".encode()).decode("ascii")
        return f"Basic {token}"


@dataclass(frozen=True, slots=True)
class Proxies:
    """The proxy for each URL scheme and the hosts that bypass them."""

    https: Proxy | None = None
    http: Proxy | None = None
    direct: tuple[str, ...] = ()  # the `no_proxy` entries, lower case, leading dots dropped

    def for_url(self, url: str) -> Proxy | None:
        """The proxy a request to `url` goes through, or None to connect directly."""
        if self.https is None and self.http is None:
            return None  # the usual case, and once per request: no parsing
        parts = urlsplit(url)
        proxy = self.https if parts.scheme == "https" else self.http
        if proxy is None or parts.hostname is None:
            return None
        port = parts.port or (443 if parts.scheme == "https" else 80)
        if _is_loopback(parts.hostname) or any(
            _bypasses(entry, parts.hostname, port) for entry in self.direct
        ):
            return None
        return proxy


def read_proxies(env: Mapping[str, str]) -> Proxies:
    """The proxies the environment sets (none when it sets none)."""
    fallback = _read_proxy(env, "all_proxy")
    return Proxies(
        https=_read_proxy(env, "https_proxy") or fallback,
        http=_read_proxy(env, "http_proxy") or fallback,
        direct=tuple(_no_proxy_entries(_variable(env, "no_proxy")[1])),
    )


def _variable(env: Mapping[str, str], name: str) -> tuple[str, str]:
    """(which variable, its value) for `name`, lower case first; empty values do not count."""
    for variable in (name, name.upper()):
        value = env.get(variable, "").strip()
        if value:
            return variable, value
    return name, ""


def _read_proxy(env: Mapping[str, str], name: str) -> Proxy | None:
    variable, value = _variable(env, name)
    if not value:
        return None
    parts = urlsplit(value if "://" in value else f"http://{value}")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise ConfigError(variable, "the proxy's port is not a number") from None
    if parts.scheme != "http":
        shown = f"{parts.scheme}://{parts.hostname or ''}:{port}"  # never the credentials
        raise ConfigError(variable, f"only http:// proxies are supported, got {shown}")
    if not parts.hostname:
        raise ConfigError(variable, "the proxy's URL names no host")
    username = None if parts.username is None else unquote(parts.username)
    password = None if parts.password is None else Secret(unquote(parts.password))
    return Proxy(parts.hostname, port, username, password)


def _no_proxy_entries(value: str) -> list[str]:
    entries = (entry.strip().lower() for entry in value.split(","))
    return [entry.removeprefix("*.").lstrip(".") for entry in entries if entry]


def _is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bypasses(entry: str, host: str, port: int) -> bool:
    """Whether one `no_proxy` entry covers `host:port`."""
    if entry == "*":
        return True
    entry, wanted_port = _split_port(entry)
    if wanted_port is not None and wanted_port != port:
        return False
    host = host.lower()
    try:
        network = ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return host == entry or host.endswith(f".{entry}")
    try:
        return ipaddress.ip_address(host) in network
    except ValueError:
        return False


def _split_port(entry: str) -> tuple[str, int | None]:
    """`host:port` or `[v6]:port` as (host, port); anything else (a bare IPv6 address,
    a CIDR range) as it is."""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    host, colon, port = entry.rpartition(":")
    if colon and ":" not in host and port.isdigit():
        return host, int(port)
    return entry, None
