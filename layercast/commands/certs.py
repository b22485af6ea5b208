"""`layercast certs`: a private CA and certificates for a test or small deployment.

    layercast certs init     --dir pki                                # ca.pem, ca.key
    layercast certs server   --dir pki --host cloud.example --host localhost --ip 127.0.0.1
    layercast certs camera   --dir pki door-1 door-2                  # cameras/<id>.pem, .key
    layercast certs operator --dir pki web alice                      # operators/<name>.pem, .key
    layercast certs revoke   --dir pki door-1 operators/alice.pem     # pki/crl.pem (X.509 CRL)

Then run the cloud with ``--tls-cert pki/server.pem --tls-key pki/server.key --tls-client-ca
pki/ca.pem`` and each camera with ``--ca-cert pki/ca.pem --client-cert pki/cameras/<id>.pem
--client-key pki/cameras/<id>.key``. A camera certificate's identity is the URI
``layercast:camera:<id>`` in its subjectAltName; the cloud accepts a stream from it only for that
camera id. Private keys are written 0600; keep ``ca.key`` away from the machines that run layercast.

``revoke`` adds certificates to a revocation list signed by the CA; the cloud given it as
``tls.crl`` refuses them (UNAUTHENTICATED) from the next call or stream on, re-reading the file
when it changes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_DIR = Path("layercast-pki")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "certs",
        help="create a private CA and server / camera / operator certificates",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="certs_command", metavar="ACTION", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"PKI directory (default {DEFAULT_DIR})")
        q.add_argument("--days", type=int, default=None, help="validity in days")
        q.add_argument("--force", action="store_true", help="overwrite existing files")

    i = actions.add_parser("init", help="create the CA (ca.pem, ca.key)")
    common(i)
    i.add_argument("--name", default="layercast private CA", help="the CA's common name")
    i.set_defaults(func=run_init)

    s = actions.add_parser("server", help="the cloud's certificate (server.pem, server.key)")
    common(s)
    s.add_argument("--host", action="append", default=[], help="DNS name of the cloud (repeatable)")
    s.add_argument("--ip", action="append", default=[], help="IP address of the cloud (repeatable)")
    s.set_defaults(func=run_server)

    c = actions.add_parser("camera", help="one certificate per camera id (cameras/<id>.pem, .key)")
    common(c)
    c.add_argument("camera_ids", nargs="+", metavar="CAMERA_ID")
    c.set_defaults(func=run_camera)

    o = actions.add_parser("operator", help="operator client certificates (operators/<name>.pem, .key)")
    common(o)
    o.add_argument("names", nargs="+", metavar="NAME")
    o.set_defaults(func=run_operator)

    r = actions.add_parser("revoke", help="add certificates to the revocation list (crl.pem)")
    r.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"PKI directory (default {DEFAULT_DIR})")
    r.add_argument(
        "--crl", type=Path, default=None, help="the revocation list to write (default DIR/crl.pem)"
    )
    r.add_argument(
        "targets", nargs="+", metavar="ID_OR_CERT", help="camera id, operator name or certificate file"
    )
    r.set_defaults(func=run_revoke)


def _refuse_overwrite(paths: list[Path], force: bool) -> None:
    from layercast.shared.errors import ConfigError

    existing = [p for p in paths if p.exists()]
    if existing and not force:
        raise ConfigError(f"{existing[0]} exists; pass --force to replace it")


def _wrote(kind: str, cert: Path, key: Path) -> None:
    print(f"wrote {kind}: {cert} (certificate), {key} (private key, 0600)")


def run_init(args: argparse.Namespace) -> int:
    from layercast.shared.pki import CA_DAYS, CertificateAuthority, PkiLayout

    layout = PkiLayout(args.dir)
    _refuse_overwrite([layout.ca_cert, layout.ca_key], args.force)
    ca = CertificateAuthority.create(args.name, days=args.days or CA_DAYS)
    _wrote("CA", *ca.save(layout))
    return 0


def run_server(args: argparse.Namespace) -> int:
    from layercast.shared.pki import LEAF_DAYS, CertificateAuthority, PkiLayout

    layout = PkiLayout(args.dir)
    ca = CertificateAuthority.load(layout)
    hosts, ips = args.host, args.ip
    if not hosts and not ips:
        hosts, ips = ["localhost"], ["127.0.0.1"]
    _refuse_overwrite([layout.server_cert, layout.server_key], args.force)
    issued = ca.issue_server(hosts, ips, days=args.days or LEAF_DAYS)
    _wrote(
        f"server certificate for {', '.join([*hosts, *ips])}",
        *issued.save(layout.server_cert, layout.server_key),
    )
    return 0


def run_camera(args: argparse.Namespace) -> int:
    from layercast.shared.pki import LEAF_DAYS, CertificateAuthority, PkiLayout, camera_uri

    layout = PkiLayout(args.dir)
    ca = CertificateAuthority.load(layout)
    paths = [layout.camera(cam) for cam in args.camera_ids]  # checks every id before writing any
    _refuse_overwrite([p for pair in paths for p in pair], args.force)
    for cam, (cert, key) in zip(args.camera_ids, paths, strict=True):
        _wrote(
            f"camera {cam} ({camera_uri(cam)})",
            *ca.issue_camera(cam, days=args.days or LEAF_DAYS).save(cert, key),
        )
    return 0


def run_operator(args: argparse.Namespace) -> int:
    from layercast.shared.pki import LEAF_DAYS, CertificateAuthority, PkiLayout, operator_uri

    layout = PkiLayout(args.dir)
    ca = CertificateAuthority.load(layout)
    paths = [layout.operator(name) for name in args.names]
    _refuse_overwrite([p for pair in paths for p in pair], args.force)
    for name, (cert, key) in zip(args.names, paths, strict=True):
        issued = ca.issue_operator(name, days=args.days or LEAF_DAYS)
        _wrote(f"operator {name} ({operator_uri(name)})", *issued.save(cert, key))
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    from layercast.shared.pki import PkiLayout
    from layercast.shared.revocation import default_crl_path, revoke

    layout = PkiLayout(args.dir)
    crl = args.crl or default_crl_path(layout)
    for cert, serial in revoke(layout, args.targets, crl):
        print(f"revoked {cert} (serial {serial:x})")
    print(f"wrote revocation list: {crl} (give it to the cloud as tls.crl)")
    return 0
