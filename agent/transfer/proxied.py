"""Requests through the environment's HTTP proxy (`config/proxies.py` reads it): the options
of an aiohttp request, and the `http.client` connection of a storage hop.

An https URL goes through a `CONNECT` tunnel, so the proxy sees only the host and port and
TLS is end to end; a plain http URL is sent to the proxy in absolute form
(`GET http://host/path`). `Proxy-Authorization` goes to the proxy only, never to the host.
"""

from __future__ import annotations

import http.client
import ssl
from typing import Any

import aiohttp

from agent.config.proxies import Proxies, Proxy

Origin = tuple[str, str, int | None]  # (scheme, host, port) as `urlsplit` gives them


def aiohttp_options(proxies: Proxies, url: str) -> dict[str, Any]:
    """The keyword arguments that send an aiohttp request to `url` through its proxy."""
    proxy = proxies.for_url(url)
    if proxy is None:
        return {}
    if proxy.username is None:
        return {"proxy": proxy.url}
    password = "" if proxy.password is None else proxy.password.reveal()
    return {"proxy": proxy.url, "proxy_auth": aiohttp.BasicAuth(proxy.username, password)}


def connection(
    origin: Origin, proxy: Proxy | None, *, timeout: float, tls: ssl.SSLContext | None
) -> http.client.HTTPConnection:
    """A not yet connected connection to `origin`, through `proxy` when there is one.

    `tls` is needed for https origins only. Through a proxy, an https origin is reached by a
    tunnel (the TLS handshake names the origin's host); a plain http one by a connection to
    the proxy, to which `request_target` and `forward_headers` must then be sent.
    """
    scheme, host, port = origin
    where, at = (host, port) if proxy is None else (proxy.host, proxy.port)
    conn: http.client.HTTPConnection
    if scheme == "https":
        conn = http.client.HTTPSConnection(where, at, timeout=timeout, context=tls)
        if proxy is not None:
            conn.set_tunnel(host, port, headers=_credentials(proxy))
    else:
        conn = http.client.HTTPConnection(where, at, timeout=timeout)
    return conn


def forward_headers(origin: Origin, proxy: Proxy | None) -> dict[str, str]:
    """Headers a plain http request sent to `proxy` needs (its credentials), else none."""
    if proxy is None or origin[0] == "https":
        return {}
    return _credentials(proxy)


def request_target(origin: Origin, proxy: Proxy | None, target: str) -> str:
    """The request line's target: absolute for a plain http request sent to a proxy."""
    if proxy is None or origin[0] == "https":
        return target
    scheme, host, port = origin
    where = f"[{host}]" if ":" in host else host
    return f"{scheme}://{where}{'' if port is None else f':{port}'}{target}"


def _credentials(proxy: Proxy) -> dict[str, str]:
    """`Proxy-Authorization` for the proxy, when it wants credentials."""
    authorization = proxy.authorization()
    return {} if authorization is None else {"Proxy-Authorization": authorization}
