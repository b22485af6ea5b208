"""Certificate revocation: an X.509 CRL signed by the private CA (``layercast certs revoke``).

    revoke(PkiLayout(Path("pki")), ["door-1"])       # pki/crl.pem lists door-1's certificate
    crl = read_crl(Path("pki/crl.pem"), ca_cert_pem)  # checked against the CA that signed it

A target is a camera id or operator name (its certificate under ``cameras/`` or ``operators/``) or
the path of a certificate file. Entries already in the list are kept, so the list only grows
(re-issue a certificate, which gets a new serial, to let a camera back in). The cloud reads the
list with ``tls.crl`` (see :mod:`layercast.cloud.security.revocation`).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization

from layercast.shared.errors import ConfigError
from layercast.shared.pki import NAME_RE, CertificateAuthority, PkiLayout

#: How long a CRL says it is current (``nextUpdate``); the cloud reloads the file whenever it changes.
CRL_DAYS = 365


def default_crl_path(layout: PkiLayout) -> Path:
    return layout.root / "crl.pem"


def resolve_target(layout: PkiLayout, target: str) -> Path:
    """The certificate file a revoke target names (a path, a camera id or an operator name)."""
    path = Path(target)
    if path.suffix == ".pem" and path.is_file():
        return path
    if NAME_RE.fullmatch(target):
        found = [p for p in (layout.camera(target)[0], layout.operator(target)[0]) if p.is_file()]
        if len(found) == 1:
            return found[0]
        if len(found) == 2:
            raise ConfigError(
                f"{target!r} is both a camera and an operator in {layout.root}: give the certificate file "
                f"({found[0]} or {found[1]})"
            )
    raise ConfigError(
        f"no certificate for {target!r}: expected a certificate file, or a camera id / operator name "
        f"with a certificate in {layout.root}/cameras or {layout.root}/operators"
    )


def read_crl(path: Path, ca_cert_pem: bytes) -> x509.CertificateRevocationList:
    """The CRL at ``path``, refused (ConfigError) unless the CA ``ca_cert_pem`` signed it."""
    try:
        crl = x509.load_pem_x509_crl(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"revocation list {path}: cannot read it ({exc.strerror or exc})") from None
    except ValueError:
        raise ConfigError(f"revocation list {path} is not a PEM X.509 CRL") from None
    ca = x509.load_pem_x509_certificate(ca_cert_pem)
    try:
        valid = crl.issuer == ca.subject and crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    except (InvalidSignature, TypeError):
        valid = False
    if not valid:
        raise ConfigError(f"revocation list {path} is not signed by the CA {ca.subject.rfc4514_string()}")
    return crl


def revoked_serials(crl: x509.CertificateRevocationList) -> frozenset[int]:
    return frozenset(entry.serial_number for entry in crl)


def revoke(layout: PkiLayout, targets: Iterable[str], crl_path: Path | None = None) -> list[tuple[str, int]]:
    """Add the targets' certificates to the CRL (created if absent), signed by the CA in ``layout``;
    returns (certificate file, serial) of each. Written atomically, mode 0644 (a CRL is public)."""
    ca = CertificateAuthority.load(layout)
    crl_path = crl_path or default_crl_path(layout)
    serials: dict[int, x509.RevokedCertificate] = {}
    if crl_path.exists():
        serials = {entry.serial_number: entry for entry in read_crl(crl_path, ca.cert_pem)}
    now = dt.datetime.now(dt.UTC)
    done: list[tuple[str, int]] = []
    for target in targets:
        cert_path = resolve_target(layout, target)
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if cert.issuer != ca.cert.subject:
            raise ConfigError(f"{cert_path} was not issued by the CA in {layout.root}")
        if cert.serial_number not in serials:
            serials[cert.serial_number] = (
                x509.RevokedCertificateBuilder()
                .serial_number(cert.serial_number)
                .revocation_date(now)
                .add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise), critical=False)
                .build()
            )
        done.append((str(cert_path), cert.serial_number))
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(now)
        .next_update(now + dt.timedelta(days=CRL_DAYS))
    )
    for entry in serials.values():
        builder = builder.add_revoked_certificate(entry)
    crl = builder.sign(ca.key, hashes.SHA256())
    crl_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = crl_path.with_name(crl_path.name + ".tmp")
    tmp.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    os.chmod(tmp, 0o644)
    tmp.replace(crl_path)
    return done
