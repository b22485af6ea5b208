"""A private certificate authority for a test or small deployment (``layercast certs``).

Everything is ECDSA P-256 with SHA-256, made with the ``cryptography`` library in
milliseconds. Private keys are written with mode 0600.

Identity in a client certificate
--------------------------------
A certificate speaks for exactly one principal, named by a URI in its
subjectAltName (the canonical form; the cloud reads nothing else):

* a camera:    ``layercast:camera:<camera id>``   (e.g. ``layercast:camera:door-1``)
* an operator: ``layercast:operator:<name>``

The subject's common name repeats the name for people and tools (``openssl x509 -subject``),
but identity is never taken from it: a server certificate or one from another tool that
happens to carry a camera's name as CN does not make its holder that camera.

Files in a PKI directory (see :class:`PkiLayout`)::

    ca.pem  ca.key                          the CA (keep ca.key offline in a real deployment)
    server.pem  server.key                  the cloud's certificate (SAN DNS/IP names)
    cameras/<id>.pem  cameras/<id>.key      one per camera (clientAuth)
    operators/<name>.pem  operators/<name>.key

    ca = CertificateAuthority.create()
    layout = PkiLayout(Path("pki"))
    ca.save(layout)
    ca.issue_server(["localhost"], ["127.0.0.1"]).save(layout.server_cert, layout.server_key)
    ca.issue_camera("door-1").save(*layout.camera("door-1"))
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from layercast.shared.errors import ConfigError

#: URI prefixes of the identities a client certificate can carry.
CAMERA_URI_PREFIX = "layercast:camera:"
OPERATOR_URI_PREFIX = "layercast:operator:"
#: What a camera id or operator name may look like (as Hello.camera_id in edge.proto).
NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")

CA_DAYS = 5 * 365
LEAF_DAYS = 365
#: Certificates are valid from a little before now, so a peer whose clock is slightly behind accepts them.
_BACKDATE = dt.timedelta(minutes=5)


def camera_uri(camera_id: str) -> str:
    """The subjectAltName URI naming ``camera_id``."""
    return CAMERA_URI_PREFIX + _checked_name(camera_id, "camera id")


def operator_uri(name: str) -> str:
    """The subjectAltName URI naming operator ``name``."""
    return OPERATOR_URI_PREFIX + _checked_name(name, "operator name")


def camera_id_from_uris(uris: Iterable[str]) -> str | None:
    """The camera a certificate with these SAN URIs speaks for; None when it names no camera,
    or more than one (such a certificate is not one camera's credential)."""
    ids = {u[len(CAMERA_URI_PREFIX) :] for u in uris if u.startswith(CAMERA_URI_PREFIX)}
    ids = {i for i in ids if NAME_RE.fullmatch(i)}
    return ids.pop() if len(ids) == 1 else None


def _checked_name(name: str, what: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise ConfigError(f"{what} {name!r}: expected 1-64 characters of [A-Za-z0-9._-]")
    return name


def write_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """Write ``key`` as unencrypted PKCS#8 PEM, readable by its owner only (0600 from the start)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing file keeps its old mode through O_CREAT
        os.write(fd, data)
    finally:
        os.close(fd)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def save(self, cert_path: Path, key_path: Path) -> tuple[Path, Path]:
        _write_cert(cert_path, self.cert)
        write_private_key(key_path, self.key)
        return cert_path, key_path


@dataclass(frozen=True)
class PkiLayout:
    """Where ``layercast certs`` keeps each file inside one directory."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.root / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.root / "server.key"

    def camera(self, camera_id: str) -> tuple[Path, Path]:
        """(certificate, key) of one camera."""
        name = _checked_name(camera_id, "camera id")
        return self.root / "cameras" / f"{name}.pem", self.root / "cameras" / f"{name}.key"

    def operator(self, name: str) -> tuple[Path, Path]:
        """(certificate, key) of one operator."""
        name = _checked_name(name, "operator name")
        return self.root / "operators" / f"{name}.pem", self.root / "operators" / f"{name}.key"


class CertificateAuthority:
    """A self-signed CA that issues server and client certificates."""

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self.cert = cert
        self.key = key

    @classmethod
    def create(cls, common_name: str = "layercast private CA", days: int = CA_DAYS) -> CertificateAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = dt.datetime.now(dt.UTC)
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
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
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def load(cls, layout: PkiLayout) -> CertificateAuthority:
        """The CA kept in ``layout`` (``layercast certs init`` made it)."""
        try:
            cert = x509.load_pem_x509_certificate(layout.ca_cert.read_bytes())
            key = serialization.load_pem_private_key(layout.ca_key.read_bytes(), password=None)
        except FileNotFoundError:
            raise ConfigError(
                f"no CA in {layout.root} (expected ca.pem and ca.key; run `layercast certs init --dir "
                f"{layout.root}` first)"
            ) from None
        except ValueError as exc:
            raise ConfigError(f"the CA in {layout.root} cannot be read: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigError(f"{layout.ca_key} is not an EC private key")
        return cls(cert, key)

    def save(self, layout: PkiLayout) -> tuple[Path, Path]:
        return Issued(self.cert, self.key).save(layout.ca_cert, layout.ca_key)

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    # -- issuing ----------------------------------------------------------------------------------
    def issue_server(
        self,
        hosts: Sequence[str] = ("localhost",),
        ips: Sequence[str] = ("127.0.0.1",),
        days: int = LEAF_DAYS,
    ) -> Issued:
        """A serverAuth certificate for the cloud, valid for these DNS names and IP addresses."""
        if not hosts and not ips:
            raise ConfigError("a server certificate needs at least one host name or IP address")
        try:
            addresses = [ipaddress.ip_address(ip) for ip in ips]
        except ValueError as exc:
            raise ConfigError(f"not an IP address: {exc}") from None
        sans: list[x509.GeneralName] = [x509.DNSName(h) for h in hosts]
        sans += [x509.IPAddress(a) for a in addresses]
        common_name = hosts[0] if hosts else str(addresses[0])
        return self._issue(common_name, sans, ExtendedKeyUsageOID.SERVER_AUTH, days)

    def issue_camera(self, camera_id: str, days: int = LEAF_DAYS) -> Issued:
        """A clientAuth certificate whose identity is camera ``camera_id``."""
        uri = camera_uri(camera_id)
        return self._issue(
            camera_id, [x509.UniformResourceIdentifier(uri)], ExtendedKeyUsageOID.CLIENT_AUTH, days
        )

    def issue_operator(self, name: str, days: int = LEAF_DAYS) -> Issued:
        """A clientAuth certificate whose identity is operator ``name``."""
        uri = operator_uri(name)
        return self._issue(name, [x509.UniformResourceIdentifier(uri)], ExtendedKeyUsageOID.CLIENT_AUTH, days)

    def _issue(
        self, common_name: str, sans: list[x509.GeneralName], usage: x509.ObjectIdentifier, days: int
    ) -> Issued:
        if days < 1:
            raise ConfigError(f"days = {days}: a certificate must be valid for at least one day")
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        not_after = min(now + dt.timedelta(days=days), self.cert.not_valid_after_utc)
        ca_ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        return Issued(cert, key)


@dataclass(frozen=True)
class LocalPki:
    """The files of a complete private PKI (see :func:`create_local_pki`)."""

    layout: PkiLayout
    cameras: tuple[str, ...]
    operators: tuple[str, ...]

    @property
    def ca_cert(self) -> Path:
        return self.layout.ca_cert

    @property
    def server_cert(self) -> Path:
        return self.layout.server_cert

    @property
    def server_key(self) -> Path:
        return self.layout.server_key

    def camera(self, camera_id: str) -> tuple[Path, Path]:
        return self.layout.camera(camera_id)

    def operator(self, name: str) -> tuple[Path, Path]:
        return self.layout.operator(name)


def create_local_pki(
    root: Path,
    cameras: Iterable[str] = (),
    *,
    operators: Iterable[str] = (),
    hosts: Sequence[str] = ("localhost",),
    ips: Sequence[str] = ("127.0.0.1",),
) -> LocalPki:
    """A fresh CA, a server certificate and client certificates, written under ``root``
    (for the demo and tests; a deployment uses ``layercast certs`` step by step)."""
    layout = PkiLayout(root)
    ca = CertificateAuthority.create()
    ca.save(layout)
    ca.issue_server(hosts, ips).save(layout.server_cert, layout.server_key)
    cams, ops = tuple(cameras), tuple(operators)
    for cam in cams:
        ca.issue_camera(cam).save(*layout.camera(cam))
    for op in ops:
        ca.issue_operator(op).save(*layout.operator(op))
    return LocalPki(layout, cams, ops)
