#!/usr/bin/env bash
# Boot script of one API instance, rendered by `deployer deploy` (deployer/src/release.rs)
# into the instance's user data. The @NAME@ placeholders are replaced with checked
# values; the download URLs are presigned and expire in minutes, so no long-lived
# secret is ever written into user data.
#
# It downloads the release's server binary, verifies its sha256 against the manifest,
# installs the systemd unit (unprivileged user, restart on failure, API port) and starts
# it. ROOT (default /) lets a test run it in a sandbox directory.
set -euo pipefail

RELEASE="@RELEASE@"
MODEL_URI="@MODEL_URI@"
API_PORT="@API_PORT@"
SERVER_URL="@SERVER_URL@"
SERVER_SHA256="@SERVER_SHA256@"
ROOT="${ROOT:-/}"
SYSTEMCTL="${SYSTEMCTL:-systemctl}"
SERVICE_USER="${SERVICE_USER:-churn-api}"

log() { printf 'boot[%s]: %s\n' "$RELEASE" "$*" >&2; }

install_dir="${ROOT%/}/opt/churn-api/releases/$RELEASE"
unit_dir="${ROOT%/}/etc/systemd/system"
mkdir -p "$install_dir" "$unit_dir"

log "release $RELEASE, model $MODEL_URI: downloading the server binary"
tmp="$(mktemp "$install_dir/server.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
curl --fail --silent --show-error --retry 5 --retry-delay 2 -o "$tmp" "$SERVER_URL"

actual="$(sha256sum "$tmp" | cut -d' ' -f1)"
if [ "$actual" != "$SERVER_SHA256" ]; then
    log "checksum mismatch: expected $SERVER_SHA256, got $actual"
    exit 1
fi
chmod 0755 "$tmp"
mv "$tmp" "$install_dir/server"
trap - EXIT
ln -sfn "$install_dir" "${ROOT%/}/opt/churn-api/current"

if [ "$(id -u)" = 0 ] && ! id "$SERVICE_USER" >/dev/null 2>&1; then
    useradd --system --no-create-home --shell /usr/sbin/nologin "$SERVICE_USER"
fi

cat >"$unit_dir/churn-api.service" <<UNIT
@SERVICE_UNIT@
UNIT

log "starting churn-api.service on port $API_PORT"
"$SYSTEMCTL" daemon-reload
"$SYSTEMCTL" enable --now churn-api.service
