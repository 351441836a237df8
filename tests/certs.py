"""Test certificates, made fresh with `cryptography` (never committed): a CA, server
certificates for 127.0.0.1/localhost, client certificates, expired ones, another CA."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path

    @property
    def cert_pem(self) -> bytes:
        return self.cert.read_bytes()

    @property
    def key_pem(self) -> bytes:
        return self.key.read_bytes()


class Authority:
    """A self-signed CA that issues server and client certificates into `folder`."""

    def __init__(self, folder: Path, name: str = "tlserve test CA") -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(days=1))
            .not_valid_after(NOW + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        self.cert = folder / "ca.pem"
        self.cert.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))

    @property
    def cert_pem(self) -> bytes:
        return self.cert.read_bytes()

    def server(self, name: str = "server", *, expired: bool = False) -> Issued:
        return self._issue(
            name,
            "localhost",
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
            ExtendedKeyUsageOID.SERVER_AUTH,
            expired,
        )

    def client(self, common_name: str, *, expired: bool = False) -> Issued:
        return self._issue(common_name, common_name, [], ExtendedKeyUsageOID.CLIENT_AUTH, expired)

    def _issue(
        self,
        file_name: str,
        common_name: str,
        alt_names: list[x509.GeneralName],
        usage: x509.ObjectIdentifier,
        expired: bool,
    ) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        start = NOW - datetime.timedelta(days=10 if expired else 1)
        # Valid for a month: the server warns about a certificate within 7 days of expiry.
        end = NOW - datetime.timedelta(days=1) if expired else NOW + datetime.timedelta(days=30)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if alt_names:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        certificate = builder.sign(self.key, hashes.SHA256())
        issued = Issued(self.folder / f"{file_name}.pem", self.folder / f"{file_name}-key.pem")
        issued.cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        issued.key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return issued


@dataclass
class Pki:
    """A CA with the server's and clients' certificates, and another CA's stranger."""

    ca: Authority
    server: Issued
    other_ca: Authority
    alice: Issued  # admin by name
    bob: Issued  # label by name
    carol: Issued  # not named: the default role (predict)
    expired: Issued
    stranger: Issued  # signed by the other CA

    @classmethod
    def made_in(cls, folder: Path) -> Pki:
        ca, other = Authority(folder / "ca"), Authority(folder / "other", "some other CA")
        return cls(
            ca=ca,
            server=ca.server(),
            other_ca=other,
            alice=ca.client("alice"),
            bob=ca.client("bob"),
            carol=ca.client("carol"),
            expired=ca.client("dave", expired=True),
            stranger=other.client("alice"),
        )
