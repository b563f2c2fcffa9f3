#!/usr/bin/env bash
# dovecot.sh — run a private, throwaway Dovecot (IMAP + POP3, plain and TLS) on 127.0.0.1.
#
# Usage:
#   IMAP_PORT=N IMAPS_PORT=N POP3_PORT=N POP3S_PORT=N \
#   MAILFERRY_TEST_USERS="alice:pw1 bob:pw2" tests/support/dovecot.sh up DIR
#   tests/support/dovecot.sh down DIR
#   tests/support/dovecot.sh kill DIR
#
# `up` writes everything under DIR and reads nothing from /etc/dovecot, so it never clashes with a
# system Dovecot and several instances can run side by side (different DIRs and ports):
#   DIR/dovecot.conf   the whole configuration (pass it to doveadm: `doveadm -c DIR/dovecot.conf`)
#   DIR/cert.pem, DIR/key.pem
#                      self-signed certificate for CN=localhost, SAN DNS:localhost + IP:127.0.0.1.
#                      openssl marks it CA:TRUE; that is deliberate: mailferry must accept it by
#                      pinning (--tls-ca), which is what users of self-hosted servers meet.
#   DIR/users          passwd-file, plaintext passwords
#   DIR/mail/USER/Maildir
#                      one Maildir++ per user (folder "A/B" is DIR/mail/USER/Maildir/.A.B)
#   DIR/dovecot.log    every log line; read it when a test fails
#   DIR/dovecot.pid    the master's pid; `down` signals only this process (and its children)
#   DIR/run, DIR/state sockets and state
# DIR must be short (< 70 characters): Dovecot's unix sockets live in DIR/run and a socket path is
# limited to 108 bytes.
#
# Environment for `up`:
#   IMAP_PORT IMAPS_PORT POP3_PORT POP3S_PORT   required; all four listen on 127.0.0.1 only
#   MAILFERRY_TEST_USERS   required; "user:password user2:password2 ..." (no spaces or colons
#                          inside a user name or password)
#   DOVECOT_TLS            optional; "no" starts a plaintext-only server (ssl = no: no STARTTLS
#                          or STLS offered, the IMAPS and POP3S listeners disabled) [yes]
#   DOVECOT_EXTRA_CONF     optional; lines appended to dovecot.conf (later settings win), e.g.
#                          "imap_capability = IMAP4rev1 LITERAL+" to hide a capability
#   MAILFERRY_TEST_OWNER_PID
#                          optional; when that process dies, a small watcher runs `down DIR`, so a
#                          test runner killed by a timeout does not leave a Dovecot behind
#                          (DIR stays, with the log, for a look at what happened)
#   DOVECOT                optional; path of the dovecot binary [/usr/sbin/dovecot]
# Mail processes run as nobody:nogroup, so `up` must run as root (as tests and CI do here).
#
# `up` exits 0 once all four ports accept connections (bounded: 10 s), and prints name=value lines
# describing the instance. Otherwise it prints the log tail to stderr and exits 1 (a port already
# in use ends up here too: the caller may retry with other ports). Exit 2: usage or environment
# error. `down` stops the instance (TERM, bounded wait, then KILL) and leaves DIR in place.
# `kill` crashes it: SIGKILL to the master and its children at once, so every open session
# breaks (after `down` Dovecot lets sessions finish); DIR stays, for `up` again.
set -euo pipefail

usage() {
  echo "usage: $0 up DIR | down DIR | kill DIR" >&2
  exit 2
}

[ $# -eq 2 ] || usage
ACTION=$1
DIR=$2

# The pid file alone is not proof: after a crash the pid may belong to another process by now.
# The master's command line carries our config path, so check it before sending any signal.
is_our_master() {
  local pid=$1
  [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$DIR/dovecot.conf"
}

# A zombie still answers kill -0; it has exited, it just waits for init to reap it.
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  local state
  state=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

stop() {
  local pidfile="$DIR/dovecot.pid"
  [ -s "$pidfile" ] || pidfile="$DIR/run/master.pid"
  if [ -s "$DIR/watcher.pid" ]; then
    local wpid
    wpid=$(cat "$DIR/watcher.pid")
    # Same recycling concern as for the master: only a watcher of this DIR is ours.
    if [ -r "/proc/$wpid/environ" ] && tr '\0' '\n' <"/proc/$wpid/environ" | grep -qxF "MAILFERRY_WATCH_DIR=$DIR"; then
      kill -TERM "$wpid" 2>/dev/null || true
    fi
    rm -f "$DIR/watcher.pid"
  fi
  if [ ! -s "$pidfile" ]; then
    echo "no Dovecot pid file in $DIR; nothing to stop"
    return 0
  fi
  local pid
  pid=$(cat "$pidfile")
  if ! is_our_master "$pid"; then
    echo "pid $pid is not running as the Dovecot of $DIR; nothing to stop"
    rm -f "$DIR/dovecot.pid" "$DIR/run/master.pid"
    return 0
  fi
  # Remembered now because after a KILL the master can no longer reap or stop them.
  local children
  children=$(cat "/proc/$pid/task/$pid/children" 2>/dev/null || true)
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    alive "$pid" || break
    sleep 0.05
  done
  if alive "$pid"; then
    echo "Dovecot $pid did not stop within 5 s; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
    local c
    for c in $children; do
      kill -KILL "$c" 2>/dev/null || true
    done
  fi
  rm -f "$DIR/dovecot.pid" "$DIR/run/master.pid"
  echo "stopped Dovecot $pid ($DIR)"
}

crash() {
  local pid
  pid=$(cat "$DIR/dovecot.pid" 2>/dev/null) || {
    echo "no Dovecot pid file in $DIR; nothing to kill" >&2
    return 1
  }
  is_our_master "$pid" || {
    echo "pid $pid is not running as the Dovecot of $DIR; nothing to kill" >&2
    return 1
  }
  local children c
  children=$(cat "/proc/$pid/task/$pid/children" 2>/dev/null || true)
  kill -STOP "$pid" 2>/dev/null || true # no new children while they die
  for c in $children; do
    kill -KILL "$c" 2>/dev/null || true
  done
  kill -KILL "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    alive "$pid" || break
    sleep 0.05
  done
  rm -f "$DIR/dovecot.pid" "$DIR/run/master.pid"
  echo "killed Dovecot $pid ($DIR)"
}

port_open() {
  # bash's /dev/tcp keeps the script free of python/nc; `timeout` bounds a connect that hangs.
  timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

start() {
  : "${IMAP_PORT:?IMAP_PORT is required}" "${IMAPS_PORT:?IMAPS_PORT is required}"
  : "${POP3_PORT:?POP3_PORT is required}" "${POP3S_PORT:?POP3S_PORT is required}"
  : "${MAILFERRY_TEST_USERS:?MAILFERRY_TEST_USERS is required (\"user:password ...\")}"
  SSL=yes
  if [ "${DOVECOT_TLS:-yes}" = no ]; then
    # Port 0 disables a listener, so only the two plaintext ports are served.
    SSL=no IMAPS_PORT=0 POP3S_PORT=0
  fi
  local dovecot=${DOVECOT:-/usr/sbin/dovecot}
  [ -x "$dovecot" ] || {
    echo "$dovecot not found; apt-get install dovecot-imapd dovecot-pop3d" >&2
    exit 2
  }
  [ "$(id -u)" = 0 ] || {
    echo "dovecot.sh up must run as root (mail processes switch to nobody)" >&2
    exit 2
  }
  if [ ${#DIR} -ge 70 ]; then
    echo "DIR too long for Dovecot's unix sockets (${#DIR} >= 70 chars): $DIR" >&2
    exit 2
  fi
  if [ -s "$DIR/dovecot.pid" ] && is_our_master "$(cat "$DIR/dovecot.pid")"; then
    echo "a Dovecot already runs for $DIR (pid $(cat "$DIR/dovecot.pid"))" >&2
    exit 1
  fi

  local uid gid
  uid=$(id -u nobody)
  gid=$(getent group nogroup | cut -d: -f3)
  mkdir -p "$DIR/run" "$DIR/state" "$DIR/mail"
  # Mail processes run as nobody and must traverse DIR (mktemp-style dirs are 0700).
  chmod 0755 "$DIR"
  chown "$uid:$gid" "$DIR/mail"

  if [ ! -s "$DIR/cert.pem" ] || [ ! -s "$DIR/key.pem" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=localhost \
      -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
      -keyout "$DIR/key.pem" -out "$DIR/cert.pem" >/dev/null 2>&1
    chmod 0600 "$DIR/key.pem"
    chmod 0644 "$DIR/cert.pem"
  fi

  : >"$DIR/users"
  local up
  for up in $MAILFERRY_TEST_USERS; do
    case $up in
    *:*) ;;
    *)
      echo "MAILFERRY_TEST_USERS entry without a password: $up" >&2
      exit 2
      ;;
    esac
    printf '%s:{PLAIN}%s::::::\n' "${up%%:*}" "${up#*:}" >>"$DIR/users"
  done
  # The auth worker runs as the dovecot user, which must read the file; nobody else should.
  chmod 0640 "$DIR/users"
  chgrp dovecot "$DIR/users" 2>/dev/null || chmod 0644 "$DIR/users"

  cat >"$DIR/dovecot.conf" <<EOF
# Generated by tests/support/dovecot.sh — private test instance, loopback only.
instance_name = mailferry-$IMAP_PORT
base_dir = $DIR/run
state_dir = $DIR/state
protocols = imap pop3
listen = 127.0.0.1
log_path = $DIR/dovecot.log
info_log_path = $DIR/dovecot.log
log_timestamp = "%Y-%m-%d %H:%M:%S "

ssl = $SSL
ssl_cert = <$DIR/cert.pem
ssl_key = <$DIR/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login

passdb {
  driver = passwd-file
  args = scheme=PLAIN $DIR/users
}
userdb {
  driver = static
  args = uid=$uid gid=$gid home=$DIR/mail/%u
}
first_valid_uid = 1
first_valid_gid = 1
mail_location = maildir:$DIR/mail/%u/Maildir
mail_max_userip_connections = 200
pop3_uidl_format = %08Xu%08Xv
# On SIGTERM the stats process exits first and every login process then waits 5 s for a stats
# handshake that never comes; without the stats writer a shutdown takes about 1 s.
stats_writer_socket_path =

namespace inbox {
  inbox = yes
  separator = /
}

service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $IMAP_PORT
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = $IMAPS_PORT
    ssl = yes
  }
}
service pop3-login {
  inet_listener pop3 {
    address = 127.0.0.1
    port = $POP3_PORT
  }
  inet_listener pop3s {
    address = 127.0.0.1
    port = $POP3S_PORT
    ssl = yes
  }
}
# doveadm talks over DIR/run's unix socket; no TCP port beyond the four above.
service doveadm {
  inet_listener {
    port = 0
  }
}
${DOVECOT_EXTRA_CONF:-}
EOF

  rm -f "$DIR/run/master.pid" "$DIR/dovecot.pid"
  if ! "$dovecot" -c "$DIR/dovecot.conf" 2>>"$DIR/dovecot.log"; then
    echo "dovecot failed to start; tail of $DIR/dovecot.log:" >&2
    tail -20 "$DIR/dovecot.log" >&2 || true
    exit 1
  fi

  local ready=no p
  for _ in $(seq 1 100); do
    if [ -s "$DIR/run/master.pid" ]; then
      ready=yes
      for p in "$IMAP_PORT" "$IMAPS_PORT" "$POP3_PORT" "$POP3S_PORT"; do
        [ "$p" = 0 ] || port_open "$p" || {
          ready=no
          break
        }
      done
      [ "$ready" = yes ] && break
    fi
    sleep 0.1
  done
  if [ "$ready" != yes ]; then
    echo "Dovecot did not come up within 10 s; tail of $DIR/dovecot.log:" >&2
    tail -20 "$DIR/dovecot.log" >&2 || true
    # A half-started master would otherwise linger and hold the ports.
    [ -s "$DIR/run/master.pid" ] && cp "$DIR/run/master.pid" "$DIR/dovecot.pid"
    stop >/dev/null 2>&1 || true
    exit 1
  fi
  cp "$DIR/run/master.pid" "$DIR/dovecot.pid"

  if [ -n "${MAILFERRY_TEST_OWNER_PID:-}" ]; then
    # Detached from our stdout/stderr so a caller reading them is not kept waiting; the
    # MAILFERRY_WATCH_DIR variable lets `down` recognise this watcher by /proc/PID/environ.
    # shellcheck disable=SC2016 # the inner script expands its own positional arguments
    MAILFERRY_WATCH_DIR=$DIR nohup bash -c '
      while kill -0 "$1" 2>/dev/null && [ -e "$2/dovecot.pid" ]; do sleep 1; done
      [ -e "$2/dovecot.pid" ] && rm -f "$2/watcher.pid" && exec bash "$3" down "$2"
    ' watcher "$MAILFERRY_TEST_OWNER_PID" "$DIR" "$(readlink -f "$0")" \
      </dev/null >/dev/null 2>&1 &
    echo $! >"$DIR/watcher.pid"
  fi

  cat <<EOF
dir=$DIR
pid=$(cat "$DIR/dovecot.pid")
conf=$DIR/dovecot.conf
cert=$DIR/cert.pem
imap=127.0.0.1:$IMAP_PORT
imaps=127.0.0.1:$IMAPS_PORT
pop3=127.0.0.1:$POP3_PORT
pop3s=127.0.0.1:$POP3S_PORT
EOF
}

case $ACTION in
up)
  mkdir -p "$DIR"
  DIR=$(cd "$DIR" && pwd)
  start
  ;;
down)
  [ -d "$DIR" ] || {
    echo "no such directory: $DIR; nothing to stop"
    exit 0
  }
  DIR=$(cd "$DIR" && pwd)
  stop
  ;;
kill)
  DIR=$(cd "$DIR" && pwd)
  crash
  ;;
*) usage ;;
esac
