#!/usr/bin/env bash
# tests/run.sh — the whole test suite: unit tests and integration tests against real, private
# Dovecot instances that the tests start themselves (tests/support/). Installs Dovecot from
# Debian's packages when it is missing (needs root, as the Dovecot tests do anyway).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/sbin/dovecot ] || ! command -v doveadm >/dev/null || ! command -v openssl >/dev/null; then
  echo "== installing Dovecot and OpenSSL (Debian packages)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dovecot-imapd dovecot-pop3d openssl >/dev/null
fi

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --no-fail-fast "$@"
else
  cargo test --no-fail-fast "$@"
fi
