#!/usr/bin/env bash
# tests/run.sh — the whole test suite: unit tests and integration tests against real, private
# Dovecot and GNU Mailutils instances that the tests start themselves (tests/support/). Installs
# them from Debian's packages when missing (needs root, as those tests do anyway).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/sbin/dovecot ] || ! command -v doveadm >/dev/null || ! command -v openssl >/dev/null ||
  [ ! -x /usr/sbin/imap4d ] || [ ! -x /usr/sbin/pop3d ] || ! command -v python3 >/dev/null ||
  ! command -v mbsync >/dev/null; then
  # python3 (its standard mailbox module) reads the mbox files mailferry writes, and mbsync
  # (isync) writes a Maildir mailferry reads: readers and writers that are not mailferry
  # (tests/local_stores.rs).
  echo "== installing Dovecot, GNU Mailutils imap4d/pop3d, OpenSSL, Python and isync (Debian packages)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    dovecot-imapd dovecot-pop3d mailutils-imap4d mailutils-pop3d openssl python3 isync >/dev/null
  # The packages' postinst may start system daemons (where an init system runs). The tests use
  # private instances on free ports and need nothing on the standard ones; say so if something
  # took them, since that is not ours to stop.
  if command -v ss >/dev/null && ss -ltn | grep -Eq '[:.](110|143|993|995)[[:space:]]'; then
    echo "note: a system mail server listens on 110/143/993/995; the tests do not use it" >&2
  fi
fi

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --no-fail-fast "$@"
else
  cargo test --no-fail-fast "$@"
fi
