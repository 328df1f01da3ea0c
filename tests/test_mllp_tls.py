"""MLLP over TLS on loopback, with a self-signed certificate made by the test and a client that verifies it."""

import datetime
import ipaddress
import socket
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sonco_fhir.connectors.mllp import END_BLOCK, START_BLOCK, server_tls_context

from test_mllp import minimal_message, read_frame, RunningListener, SOCKET_TIMEOUT, store  # noqa: F401 (store is a fixture)


def self_signed_certificate(folder) -> tuple:
    """Write a self-signed certificate for localhost and 127.0.0.1, and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "server.pem", folder / "server.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


@pytest.fixture
def tls_listener(tmp_path, store):
    cert_file, key_file = self_signed_certificate(tmp_path)
    server = RunningListener(store, ssl_context=server_tls_context(cert_file, key_file), read_timeout=5.0)
    yield server, cert_file
    server.stop()


def tls_exchange(port: int, context: ssl.SSLContext, payload: bytes) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as client:
            client.sendall(START_BLOCK + payload + END_BLOCK)
            ack = read_frame(client)
            assert client.version() in ("TLSv1.2", "TLSv1.3")
    return ack


def test_tls_client_verifies_and_gets_aa(tls_listener, store):
    server, cert_file = tls_listener
    context = ssl.create_default_context(cafile=str(cert_file))

    ack = tls_exchange(server.port, context, minimal_message("TLS-1").encode())

    assert ack.split("\r")[1] == "MSA|AA|TLS-1"
    assert [row.control_id for row in store.pending()] == ["TLS-1"]


def test_tls_untrusted_client_fails_listener_keeps_serving(tls_listener, store):
    server, cert_file = tls_listener
    # Default trust store only: the self-signed certificate is not trusted.
    untrusted = ssl.create_default_context()
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_exchange(server.port, untrusted, minimal_message("TLS-NO").encode())

    # A client speaking plain MLLP to the TLS port gets no ACK, and the listener goes on.
    with socket.create_connection(("127.0.0.1", server.port), timeout=SOCKET_TIMEOUT) as plain:
        plain.sendall(START_BLOCK + minimal_message("PLAIN-1").encode() + END_BLOCK)
        plain.settimeout(2.0)
        try:
            received = plain.recv(65536)
        except (TimeoutError, socket.timeout, ConnectionResetError):
            received = b""
        assert b"MSA" not in received

    ack = tls_exchange(server.port, ssl.create_default_context(cafile=str(cert_file)),
                       minimal_message("TLS-2").encode())
    assert ack.split("\r")[1] == "MSA|AA|TLS-2"
    assert [row.control_id for row in store.pending()] == ["TLS-2"]
