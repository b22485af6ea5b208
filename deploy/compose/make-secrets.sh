#!/usr/bin/env bash
# Write the secrets docker-compose.yml mounts (run once, before `docker compose up`):
#   secrets/edge-1.token, secrets/edge-2.token    one bearer token per synthetic camera
#   secrets/operator.token                        the operator "ops" (an enhancer: cloud.toml)
#   secrets/camera_credentials.toml               [cameras] and [operators] name = "sha256:<hash>" for the cloud
#   secrets/grafana_admin_password                Grafana's admin password
#   secrets/cluster_secret                        the key cloud replicas sign what they pass through Redis with
#   secrets/redis_password, secrets/redis_users.acl   Redis's user for the cloud (the ACL file holds its
#                                                 SHA-256 only; the default user is off)
#   secrets/redis-ca.pem, redis.pem, redis.key    a private CA and Redis's TLS certificate (host `redis`;
#                                                 openssl; redis-ca.key stays here, not mounted)
# Existing files are kept (delete secrets/ to rotate everything). Only python3's standard
# library and openssl are used; the hashes are those of `layercast cloud --hash-token`.
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
cluster_secret = out / "cluster_secret"
if not cluster_secret.exists():
    cluster_secret.write_text(secrets.token_hex(32) + "\n")
redis_pw = out / "redis_password"
if not redis_pw.exists():
    redis_pw.write_text(secrets.token_urlsafe(32) + "\n")
digest = hashlib.sha256(redis_pw.read_text().strip().encode()).hexdigest()
(out / "redis_users.acl").write_text(
    "user default off\n"
    f"user layercast on #{digest} ~layercast:* &* +@all -@dangerous\n"
    "user probe on nopass -@all +ping\n"
)
PY
if [ ! -f "$out/redis.pem" ]; then
  ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
  openssl req -x509 "${ec[@]}" -keyout "$out/redis-ca.key" -out "$out/redis-ca.pem" -days 3650 \
    -subj "/CN=layercast redis CA" 2>/dev/null
  openssl req "${ec[@]}" -keyout "$out/redis.key" -out "$out/redis.csr" -subj "/CN=redis" 2>/dev/null
  openssl x509 -req -in "$out/redis.csr" -CA "$out/redis-ca.pem" -CAkey "$out/redis-ca.key" \
    -CAcreateserial -out "$out/redis.pem" -days 825 \
    -extfile <(printf "subjectAltName=DNS:redis,DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth") 2>/dev/null
  rm -f "$out/redis.csr" "$out/redis-ca.srl"
  chmod 0600 "$out/redis-ca.key"
  chmod 0644 "$out/redis.key"   # read by the redis user of its container (see the note above)
fi
python3 - "$out" <<'PY'
import sys
from pathlib import Path

out = Path(sys.argv[1])
print(f"secrets in {out}: {', '.join(sorted(p.name for p in out.iterdir()))}")
PY
