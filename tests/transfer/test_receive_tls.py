"""The storage hop over TLS (presigned URLs are https): the server's certificate is checked
against the trusted CAs and its name, a kept-alive TLS connection serves the next body, and
through a proxy the body comes by a CONNECT tunnel with TLS end to end."""

from __future__ import annotations

import asyncio
import datetime
import http.server
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.config.proxies import Proxies, Proxy
from agent.config.secret import Secret
from agent.transfer.receive import Connections, Exchange
from tests.proxy import ForwardProxy

BODY = b"presigned bytes " * 64


class _Blob(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    connections: list[int] = []

    def setup(self) -> None:
        super().setup()
        self.connections.append(id(self.connection))

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args: Any) -> None:
        pass


def _self_signed(folder: Path, name: str) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and `blob.test` (its own issuer) and its key, as PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.IPAddress(ipaddress.ip_address(name)), x509.DNSName("blob.test")]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / f"{name}.crt", folder / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An https URL on loopback and the certificate its server presents."""
    cert_file, key_file = _self_signed(tmp_path, "127.0.0.1")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    _Blob.connections = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Blob)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield (
            f"https://127.0.0.1:{server.server_address[1]}/bucket/blob?X-Amz-Signature=s",
            cert_file,
        )
    finally:
        server.shutdown()
        server.server_close()


class _Digest:
    def __init__(self) -> None:
        self.seen = b""

    def update(self, data: Any) -> None:
        self.seen += bytes(data)


def _write(handle: Any, buffers: list[Any], digest: Any) -> None:
    for buffer in buffers:
        handle.write(buffer)
        digest.update(buffer)


def test_a_body_from_a_trusted_tls_server_is_received_and_the_connection_reused(
    tls_server: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, cert_file = tls_server
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))  # the system's trust store, as tested
    connections = Connections()
    try:
        for n in range(2):
            exchange = Exchange(connections, url, {})
            status, _ = exchange.open()
            assert status == 200
            digest = _Digest()
            with (tmp_path / f"{n}.bin").open("wb") as handle:
                assert exchange.pump(handle, digest, 1 << 20, write_and_hash=_write)
            exchange.close()
            assert (tmp_path / f"{n}.bin").read_bytes() == digest.seen == BODY
    finally:
        connections.close()
    assert len(_Blob.connections) == 1  # the TLS connection was kept alive for the second


def test_a_tls_server_whose_certificate_is_not_trusted_is_refused(
    tls_server: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No body is taken from a server the trusted CAs do not vouch for (a certificate of
    the right name, signed by an unknown key): the connection fails before any request."""
    url, _ = tls_server
    (tmp_path / "other").mkdir()
    stranger, _ = _self_signed(tmp_path / "other", "127.0.0.1")
    monkeypatch.setenv("SSL_CERT_FILE", str(stranger))
    connections = Connections()
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            Exchange(connections, url, {}).open()
    finally:
        connections.close()


async def test_through_a_proxy_a_tls_body_comes_by_a_tunnel_the_proxy_cannot_read(
    tls_server: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The proxy is asked to CONNECT to the host's name (with its credentials) and never
    sees the request itself: the presigned URL's path and signature stay inside TLS, whose
    certificate is checked against the host's name, not the proxy's."""
    url, cert_file = tls_server
    url = url.replace("127.0.0.1", "blob.test")  # reachable through the proxy only
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))
    proxy = ForwardProxy(credentials=("agent", "pw"))
    async with proxy.running() as proxy_url:
        port = int(proxy_url.rsplit(":", 1)[1])
        connections = Connections(Proxies(https=Proxy("127.0.0.1", port, "agent", Secret("pw"))))

        def fetch() -> bytes:
            exchange = Exchange(connections, url, {})
            status, _ = exchange.open()
            assert status == 200
            with (tmp_path / "tunnelled.bin").open("wb") as handle:
                assert exchange.pump(handle, _Digest(), 1 << 20, write_and_hash=_write)
            exchange.close()
            return (tmp_path / "tunnelled.bin").read_bytes()

        try:
            assert await asyncio.get_running_loop().run_in_executor(None, fetch) == BODY
        finally:
            connections.close()
    (seen,) = proxy.seen
    assert seen.method == "CONNECT"
    assert seen.target == f"blob.test:{url.split(':')[2].split('/')[0]}"
    assert "signature" not in str(seen).lower()
