#!/usr/bin/env bash
# demo/run.sh — mailferry's main job on a built-in demo, on this machine only.
#
# Starts two throwaway Dovecot servers on 127.0.0.1 (an "old" POP3 server and a "new" IMAP
# server), loads the fixtures mailbox (fixtures/*.eml, the awkward real-world shapes) plus a few
# hundred generated messages into carol's POP3 maildrop on the old one, then runs
#   mailferry migrate --from pop3s://carol@… --to imaps://alice@…/INBOX
# with progress bars (on a terminal) and a JSON report, and runs it a second time to show that a
# re-run copies nothing. Then alice's new IMAP account is mirrored into a backup account
# (mailferry mirror, IMAP -> IMAP, as cron would run it): a first run, a new message, a second run. Everything lives in a temp dir that is removed at the end; the servers
# are stopped on exit. Needs root (Dovecot's mail processes run as nobody) and Debian's
# dovecot-imapd + dovecot-pop3d, which it installs with apt-get when missing.
#
# Usage: bash demo/run.sh [GENERATED_MESSAGES]   (default 2000)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
GENERATED=${1:-2000}
DOVECOT_SH="$ROOT/tests/support/dovecot.sh"

if [ ! -x /usr/sbin/dovecot ] || ! command -v doveadm >/dev/null; then
  echo "== installing Dovecot (Debian packages dovecot-imapd, dovecot-pop3d)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dovecot-imapd dovecot-pop3d >/dev/null
fi

echo "== building mailferry (release)"
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
# Where cargo put it: ./target, or CARGO_TARGET_DIR (or a build.target-dir in a cargo config).
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps --manifest-path "$ROOT/Cargo.toml" |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
MAILFERRY="$TARGET_DIR/release/mailferry"

WORK=$(mktemp -d /tmp/mfdemo.XXXX)
# Dovecot's unprivileged processes must reach the servers' directories inside.
chmod 0755 "$WORK"
cleanup() {
  [ -n "${MAILFERRY_DEMO_KEEP:-}" ] && { echo "kept $WORK"; return; }
  "$DOVECOT_SH" down "$WORK/old" >/dev/null 2>&1 || true
  "$DOVECOT_SH" down "$WORK/new" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# A port where nothing listens now (a race with another program is possible but harmless:
# dovecot.sh then fails loudly).
free_port() {
  local port
  while :; do
    port=$(( 20000 + RANDOM % 30000 ))
    if ! timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null; then
      echo "$port"; return
    fi
  done
}

start_server() { # NAME USERS
  IMAP_PORT=$(free_port) IMAPS_PORT=$(free_port) POP3_PORT=$(free_port) POP3S_PORT=$(free_port) \
    MAILFERRY_TEST_USERS="$2" "$DOVECOT_SH" up "$WORK/$1" > "$WORK/$1.env"
}
port_of() { # NAME KEY
  sed -n "s/^$2=127.0.0.1://p" "$WORK/$1.env"
}

echo "== starting two throwaway Dovecot servers on 127.0.0.1"
start_server old "carol:carol-old-secret"
start_server new "alice:alice-new-secret backup:backup-secret"
cat "$WORK/old/cert.pem" "$WORK/new/cert.pem" > "$WORK/demo-ca.pem"

echo "== loading the fixtures mailbox and $GENERATED generated messages into carol's POP3 maildrop"
count=0
for f in "$ROOT"/fixtures/*.eml; do
  doveadm -c "$WORK/old/dovecot.conf" save -u carol < "$f"
  count=$((count + 1))
done
new_dir="$WORK/old/mail/carol/Maildir/new"
for i in $(seq 1 "$GENERATED"); do
  {
    printf 'From: Demo Sender <sender%d@old.example>\r\nTo: carol@old.example\r\n' "$((i % 17))"
    printf 'Subject: Demo message %d\r\nDate: Mon, 1 Jan 2024 %02d:%02d:00 +0000\r\n' "$i" "$((i / 60 % 24))" "$((i % 60))"
    printf 'Message-ID: <demo-%d@old.example>\r\n\r\n' "$i"
    for _ in $(seq 1 $((20 + i % 80))); do printf 'Line of demo text for message %d, to give it some weight.\r\n' "$i"; done
  } > "$new_dir/demo.$i.old"
done
chown -R nobody:nogroup "$WORK/old/mail"
count=$((count + GENERATED))

export MAILFERRY_FROM_PASSWORD=carol-old-secret MAILFERRY_TO_PASSWORD=alice-new-secret
FROM="pop3s://carol@127.0.0.1:$(port_of old pop3s)"
TO="imaps://alice@127.0.0.1:$(port_of new imaps)/INBOX"

echo
echo "== dry run: what would be copied"
echo "\$ mailferry migrate --from $FROM --to $TO --tls-ca demo-ca.pem --dry-run"
"$MAILFERRY" migrate --from "$FROM" --to "$TO" --tls-ca "$WORK/demo-ca.pem" --dry-run

echo
echo "== migrating $count messages"
echo "\$ mailferry migrate --from $FROM --to $TO --tls-ca demo-ca.pem --report report.json"
"$MAILFERRY" migrate --from "$FROM" --to "$TO" --tls-ca "$WORK/demo-ca.pem" \
  --report "$WORK/report.json"
echo
echo "== the report (report.json)"
cat "$WORK/report.json"
echo

echo
echo "== running it again: nothing left to copy"
"$MAILFERRY" migrate --from "$FROM" --to "$TO" --tls-ca "$WORK/demo-ca.pem"

BACKUP="imaps://backup@127.0.0.1:$(port_of new imaps)"
MIRROR_FROM="imaps://alice@127.0.0.1:$(port_of new imaps)"
mirror() {
  echo "\$ mailferry mirror --from $MIRROR_FROM --to $BACKUP --tls-ca demo-ca.pem --state state/"
  MAILFERRY_FROM_PASSWORD=alice-new-secret MAILFERRY_TO_PASSWORD=backup-secret \
    "$MAILFERRY" mirror --from "$MIRROR_FROM" --to "$BACKUP" --tls-ca "$WORK/demo-ca.pem" \
    --state "$WORK/state"
}
echo
echo "== mirroring alice's new IMAP account into a backup account (IMAP -> IMAP, for cron)"
mirror
echo
echo "== a new message reaches alice; the next mirror run copies just that one"
printf 'From: someone@new.example\r\nSubject: After the migration\r\nMessage-ID: <after-1@new.example>\r\n\r\nNew mail.\r\n' |
  doveadm -c "$WORK/new/dovecot.conf" save -u alice
mirror
echo
echo "Demo done; the servers are stopped and $WORK is removed."
