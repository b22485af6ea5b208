#!/usr/bin/env bash
# Write the secrets docker-compose.yml mounts (run once, before `docker compose up`):
#   secrets/edge-1.token, secrets/edge-2.token    one bearer token per synthetic camera
#   secrets/operator.token                        the operator "ops" (an enhancer: cloud.toml)
#   secrets/camera_credentials.toml               [cameras] and [operators] name = "sha256:<hash>" for the cloud
#   secrets/grafana_admin_password                Grafana's admin password
# Existing files are kept (delete secrets/ to rotate everything). Only python3's standard
# library is used; the hashes are those of `layercast cloud --hash-token`.
# Usage: deploy/compose/make-secrets.sh [OUT_DIR]   (default: secrets/ beside this script)
set -euo pipefail
out=${1:-"$(dirname "$0")/secrets"}
# The directory is private (0700); the files are 0644 because compose bind-mounts file secrets
# with their host owner and mode, and the containers run as other users (layercast 10001,
# grafana 472). Inside a container only the single file is mounted, so the 0700 directory
# still keeps other host users out.
mkdir -p "$out"
chmod 0700 "$out"
umask 022
python3 - "$out" <<'PY'
import hashlib
import secrets
import sys
from pathlib import Path

out = Path(sys.argv[1])
cameras = ["edge-1", "edge-2"]
for cam in cameras:
    f = out / f"{cam}.token"
    if not f.exists():
        f.write_text(secrets.token_urlsafe(32) + "\n")
op = out / "operator.token"
if not op.exists():
    op.write_text(secrets.token_urlsafe(32) + "\n")


def hashed(path: Path) -> str:
    token = path.read_text().splitlines()[0].strip()
    return f'"sha256:{hashlib.sha256(token.encode()).hexdigest()}"'


lines = ["# name = sha256 of its token (layercast cloud --hash-token)", "[cameras]"]
lines += [f"{cam} = {hashed(out / f'{cam}.token')}" for cam in cameras]
lines += ["[operators]", f"ops = {hashed(op)}"]
(out / "camera_credentials.toml").write_text("\n".join(lines) + "\n")
pw = out / "grafana_admin_password"
if not pw.exists():
    pw.write_text(secrets.token_urlsafe(18) + "\n")
print(f"secrets in {out}: {', '.join(sorted(p.name for p in out.iterdir()))}")
PY
