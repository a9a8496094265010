"""The local cloud's certificates: a local CA and one server certificate signed by it.

Both are created once under the local cloud's folder and reused; clients trust the CA
bundle (``ca.pem``). The server certificate follows what the seed asks of a server
authentication certificate: RSA 4096-bit, X.509 v3, server authentication usage, with
subject alternative names for ``127.0.0.1`` and ``localhost``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from provisioner.site.keys import write_private

KEY_SIZE = 4096
CA_DAYS = 3650
SERVER_DAYS = 825
RENEW_BEFORE = dt.timedelta(days=30)
HOSTS = ("localhost",)
IPS = ("127.0.0.1", "::1")


@dataclass(frozen=True)
class CertPaths:
    """Where the certificate files of one local cloud live."""

    folder: Path

    @property
    def ca_cert(self) -> Path:
        """The CA bundle clients pass as ``connection_verify``."""
        return self.folder / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.folder / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.folder / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.folder / "server.key"


def ensure(folder: Path) -> CertPaths:
    """Create the CA and the server certificate under ``folder`` unless they exist and are valid.

    The CA is made once. The server certificate is made once and renewed only when it is
    missing, about to expire or no longer signed by the CA on disk.
    """
    paths = CertPaths(folder)
    if not (paths.ca_cert.exists() and paths.ca_key.exists()):
        _write_ca(paths)
    ca_cert = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
    if not _server_usable(paths, ca_cert):
        ca_key = serialization.load_pem_private_key(paths.ca_key.read_bytes(), password=None)
        _write_server(paths, ca_cert, ca_key)
    return paths


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=KEY_SIZE)


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _replace_private(path: Path, data: bytes) -> None:
    path.unlink(missing_ok=True)
    write_private(path, data)


def _write_ca(paths: CertPaths) -> None:
    key = _new_key()
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cdp local cloud"),
        x509.NameAttribute(NameOID.COMMON_NAME, "cdp local cloud CA"),
    ])
    now = dt.datetime.now(dt.timezone.utc)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    _replace_private(paths.ca_key, _pem_key(key))
    paths.ca_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.server_cert.unlink(missing_ok=True)  # signed by the old CA, if any


def _write_server(paths: CertPaths, ca_cert: x509.Certificate, ca_key) -> None:
    key = _new_key()
    now = dt.datetime.now(dt.timezone.utc)
    sans = [x509.DNSName(h) for h in HOSTS] + [x509.IPAddress(ipaddress.ip_address(i)) for i in IPS]
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cdp local cloud"),
            x509.NameAttribute(NameOID.COMMON_NAME, "localhost"),
        ]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=SERVER_DAYS), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=True,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _replace_private(paths.server_key, _pem_key(key))
    paths.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _server_usable(paths: CertPaths, ca_cert: x509.Certificate) -> bool:
    if not (paths.server_cert.exists() and paths.server_key.exists()):
        return False
    cert = x509.load_pem_x509_certificate(paths.server_cert.read_bytes())
    if cert.not_valid_after_utc - dt.datetime.now(dt.timezone.utc) < RENEW_BEFORE:
        return False
    try:
        cert.verify_directly_issued_by(ca_cert)
        key = serialization.load_pem_private_key(paths.server_key.read_bytes(), password=None)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return key.public_key().public_numbers() == cert.public_key().public_numbers()
