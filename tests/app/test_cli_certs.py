"""`layercast certs` as a person runs it, checked independently with the openssl command line."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from layercast.cli import main
from layercast.shared.pki import create_local_pki

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def openssl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, timeout=60)


@pytest.fixture
def pki_dir(tmp_path: Path, capsys) -> Path:
    d = tmp_path / "pki"
    assert main(["certs", "init", "--dir", str(d)]) == 0
    assert (
        main(
            [
                "certs",
                "server",
                "--dir",
                str(d),
                "--host",
                "localhost",
                "--host",
                "cloud.test",
                "--ip",
                "127.0.0.1",
            ]
        )
        == 0
    )
    assert main(["certs", "camera", "--dir", str(d), "cam-1", "cam-2"]) == 0
    assert main(["certs", "operator", "--dir", str(d), "web"]) == 0
    return d


def test_prints_what_it_wrote_and_keys_are_private(pki_dir: Path, capsys):
    assert main(["certs", "camera", "--dir", str(pki_dir), "cam-3"]) == 0
    out = capsys.readouterr().out
    assert str(pki_dir / "cameras" / "cam-3.pem") in out and "layercast:camera:cam-3" in out
    keys = sorted(pki_dir.rglob("*.key"))
    assert {k.name for k in keys} == {
        "ca.key",
        "server.key",
        "cam-1.key",
        "cam-2.key",
        "cam-3.key",
        "web.key",
    }
    for key in keys:
        assert key.stat().st_mode & 0o777 == 0o600, key


@needs_openssl
def test_openssl_accepts_the_chain_and_purposes(pki_dir: Path):
    ca = pki_dir / "ca.pem"
    server = openssl("verify", "-CAfile", ca, "-purpose", "sslserver", pki_dir / "server.pem")
    assert server.returncode == 0 and ": OK" in server.stdout, server.stderr
    for cert in [
        pki_dir / "cameras" / "cam-1.pem",
        pki_dir / "cameras" / "cam-2.pem",
        pki_dir / "operators" / "web.pem",
    ]:
        r = openssl("verify", "-CAfile", ca, "-purpose", "sslclient", cert)
        assert r.returncode == 0 and ": OK" in r.stdout, r.stderr
    # a camera certificate is not a server certificate
    r = openssl("verify", "-CAfile", ca, "-purpose", "sslserver", pki_dir / "cameras" / "cam-1.pem")
    assert r.returncode != 0


@needs_openssl
def test_identity_and_names_as_openssl_reads_them(pki_dir: Path):
    cam = openssl(
        "x509", "-in", pki_dir / "cameras" / "cam-2.pem", "-noout", "-subject", "-ext", "subjectAltName"
    )
    assert cam.returncode == 0, cam.stderr
    assert "CN=cam-2" in cam.stdout.replace(" ", "") and "URI:layercast:camera:cam-2" in cam.stdout
    srv = openssl("x509", "-in", pki_dir / "server.pem", "-noout", "-ext", "subjectAltName")
    assert (
        "DNS:localhost" in srv.stdout
        and "DNS:cloud.test" in srv.stdout
        and "IP Address:127.0.0.1" in srv.stdout
    )
    ca = openssl("x509", "-in", pki_dir / "ca.pem", "-noout", "-ext", "basicConstraints,keyUsage")
    assert "CA:TRUE" in ca.stdout and "Certificate Sign" in ca.stdout
    key = openssl("pkey", "-in", pki_dir / "cameras" / "cam-2.key", "-noout", "-text")
    assert key.returncode == 0 and "prime256v1" in key.stdout


@needs_openssl
def test_openssl_refuses_a_certificate_from_another_ca(pki_dir: Path, tmp_path: Path):
    other = create_local_pki(tmp_path / "other", ["cam-1"])
    r = openssl("verify", "-CAfile", pki_dir / "ca.pem", other.camera("cam-1")[0])
    assert r.returncode != 0


def test_refuses_to_overwrite_and_bad_input(pki_dir: Path, tmp_path: Path, capsys):
    before = (pki_dir / "cameras" / "cam-1.pem").read_bytes()
    assert main(["certs", "camera", "--dir", str(pki_dir), "cam-1"]) == 1
    assert "--force" in capsys.readouterr().err
    assert (pki_dir / "cameras" / "cam-1.pem").read_bytes() == before
    assert main(["certs", "camera", "--dir", str(pki_dir), "--force", "cam-1"]) == 0
    assert (pki_dir / "cameras" / "cam-1.pem").read_bytes() != before
    assert main(["certs", "init", "--dir", str(pki_dir)]) == 1  # never replaces a CA silently
    assert main(["certs", "camera", "--dir", str(pki_dir), "ok-cam", "bad id"]) == 1
    assert "bad id" in capsys.readouterr().err and not (pki_dir / "cameras" / "ok-cam.pem").exists()
    assert main(["certs", "camera", "--dir", str(tmp_path / "empty"), "cam-1"]) == 1
    assert "certs init" in capsys.readouterr().err
    assert main(["certs", "server", "--dir", str(pki_dir), "--force", "--ip", "not-an-ip"]) == 1
