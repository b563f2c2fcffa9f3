#!/usr/bin/env bash
# bench/run.sh — end-to-end benchmark of `mailferry migrate` (POP3 -> IMAP and IMAP -> IMAP) and
# `mailferry mirror`, against a raw pipelined MULTIAPPEND baseline, on loopback and at 50 ms RTT.
#
# Usage: bash bench/run.sh [--count N] [--rtt-count M] [--rtt-ms R] [--transport plain|tls]
#                          [--seed S] [--connections C] [--reps R] [--noop-samples K]
#                          [--case-timeout T]
#        bash bench/run.sh --memory [--count N] [--memory-count L] [--big-mb B] [--transport T]
#                          [--seed S] [--connections C] [--reps R] [--case-timeout T]
#        bash bench/run.sh --local [--count N] [--transport T] [--seed S] [--connections C]
#                          [--reps R] [--case-timeout T]
#   --count N        messages on the loopback link (default 2000; env N)
#   --rtt-count M    messages on the slow link (default 1000; env RTT_COUNT): the first M of the
#                    same corpus
#   --rtt-ms R       round-trip time the latency relay adds on the slow link (default 50; env
#                    RTT_MS; 0 leaves the slow link out)
#   --transport T    plain (default; env TRANSPORT): plaintext Dovecots (no TLS, no STARTTLS),
#                    as the reference numbers in shared/research/bench-results.md were taken;
#                    mailferry then uses pop3:// and imap:// URLs with --allow-plaintext.
#                    tls: POP3S and IMAPS (pop3s://, imaps:// with --tls-ca), the baseline too
#   --seed S         corpus seed (default 42; env SEED): same N and seed, byte-identical corpus
#   --connections C  passed to mailferry (default: mailferry's own default; env CONNECTIONS)
#   --reps R         repetitions of the timed cases, each into fresh target users
#                    (default 3; env REPS); the table shows medians
#   --noop-samples K timed no-op mirror runs per rep (default 3; env NOOP_SAMPLES); its row
#                    shows their median
#   --case-timeout T seconds after which one case is killed and fails (default 300; env
#                    CASE_TIMEOUT), so a slow case cannot hang the bench
#   --memory         the memory part instead of the speed table (env MEMORY=1): see "Memory"
#                    below. --count is then its small mailbox, and:
#   --memory-count L messages in its large mailbox (default 10000; env MEMORY_COUNT)
#   --big-mb B       size of its big message in MB (default 50; env BIG_MB)
#   --local          the local-store part instead of the speed table (env LOCAL=1): see "Local
#                    stores" below. --count is then its account's size (default 10000)
#   --scale          the scale part instead (env SCALE=1): see "Scale" below; --reps then
#                    defaults to 1, and it takes these (defaults in brackets):
#   --scale-count N  messages of the large mailbox [100000]
#   --scale-folders F    folders of its wide twin [100]
#   --scale-noop-count K messages of the first no-op re-run row [10000]
#   --scale-rss-count S  messages of the mailbox the large one's RSS is held to [2000]
#   --scale-accounts A   accounts in the batch [1000]
#   --scale-account-messages M  messages per batch account [20]
#   --scale-jobs J       the batch's --jobs [8]
#   --scale-max-connections C   the batch's --max-connections-per-host [24]
# Environment:
#   BENCH_DIR        where the servers' directories go (default /dev/shm, tmpfs, as for the
#                    reference numbers: the bench then measures protocol and CPU, not the VM's
#                    noisy disk; BENCH_DIR=/tmp measures with the disk, fsyncs included)
#   MAILFERRY        a mailferry binary to use instead of `cargo build --release`'s
#   KEEP=1           keep the directory (logs, reports, relay stats, Maildirs) after the servers
#                    stop
#   TRACE=1          the relay also records every chunk; each mailferry case on the slow link
#                    leaves its own DIR/r-CASE-REP.trace (use with KEEP=1), which
#                    `python3 bench/latency_relay.py --timeline FILE` prints as a timeline of
#                    bursts per connection: where a run waits for answers one at a time
#
# What it does: starts two throwaway Dovecot servers on 127.0.0.1 (tests/support/dovecot.sh;
# DOVECOT_TLS=no for the plain transport), generates N realistic messages (bench/bench.py:
# mostly 2-20 KB, some to 100 KB, a few 100 KB-2 MB attachments, ~2% without Message-ID, ~1%
# sharing one, CRLF) straight into two source accounts: a POP3 user's maildrop, and an IMAP
# user's six folders (INBOX 55%, Archive 15%, Archive/2019 8%, Sent 10%, Lists/dev 9%, Données
# 3%; \Seen 70%, \Answered 10%, \Flagged 5%; internal dates spread over 2004-2025); the first M
# of them likewise into two more accounts for the slow link. The slow link is
# bench/latency_relay.py, our own user-space relay (this kernel has no sch_netem, so no
# `tc netem`): it forwards every chunk R/2 ms after it arrived while it keeps reading, so a
# round trip costs R ms and pipelined traffic is not punished; it sits in front of the source's
# POP3 and IMAP ports and the target's IMAP port, and its self-test (ping-pong round trip, a
# pipelined burst, bulk throughput) runs and prints before the slow link's cases.
# Then, on each link (loopback: straight to the servers; slow: through the relay), each case into
# a fresh target user:
#   1. baseline upload   bench/baseline.py — NOT mailferry: a minimal raw IMAP client that
#                        uploads the IMAP account's files (every folder, flags, internal dates)
#                        with LOGIN + CREATEs pipelined, then MULTIAPPEND batches of 50 with
#                        LITERAL+, never waiting for an answer before the next batch (8 in
#                        flight per connection); over 1, 4 and 8 target connections (batch k
#                        on connection k mod N). The yardstick: the "x baseline" column divides
#                        by the fastest of the three in the same rep
#   1b. baseline IMAP copy   the same client reading the IMAP account from the source server
#                        instead (LIST, then every folder's EXAMINE + UID FETCH at once, each
#                        message passed on to the upload as it arrives; no diff, no state)
#   1c. baseline POP3 copy   the same client reading a POP3 maildrop into INBOX (USER, PASS,
#                        STAT, UIDL at once, then every RETR at once, each message passed on to
#                        the upload). Its own account holds the POP3 account's files (hard
#                        links): Dovecot moves a maildrop's files from new/ to cur/ as a session
#                        opens it, QUIT or not (it closes without QUIT, so nothing is marked
#                        seen); mailferry's POP3 account is left as it was
#   2. doveadm import    the IMAP account's Maildir, every folder (Dovecot's own floor, no
#                        network: loopback only)
#   3. mailferry POP3 copy      migrate --from pop3://… --to imap://…/INBOX
#   4. mailferry POP3 no-op re-run   the same command again; must copy 0 (the target server
#                                    parses the copies' headers now, for the first time)
#   4b. mailferry POP3 no-op again   and once more, with the target's header cache warm
#   5. mailferry IMAP copy      migrate --from imap://… --to imap://… (every folder)
#   6. mailferry IMAP no-op re-run   the same command again; must copy 0 (headers parsed)
#   6b. mailferry IMAP no-op again   and once more
#   7. mailferry mirror first run    mirror --state DIR (fresh) --from imap://… --to imap://…
#   8. mailferry mirror no-op   the same mirror again, nothing changed (K times): must copy 0 and
#                               update 0 flags
#   9. on the slow link only: a tool waiting 2 round trips a message, not run but computed
#      (messages x 2 x the relay's measured round trip: a RETR's, then an APPEND's)
# --reps times, and prints one table: case, link, messages, seconds, msg/s, MB/s, peak RSS MiB
# (wait4's ru_maxrss of that process; bench/measure.py) and the time as a multiple of the
# baseline upload on the same link in the same rep (median of the per-rep ratios); medians over
# the reps. The baselines' seconds are their own (connect to last answer, without Python's
# start-up: that only makes the yardstick stricter). It checks that each baseline exits 0 and
# landed every message with its folder, flags and date; that mailferry exits 0, that its report
# says copied == N (then 0) with failed 0 and verified true (mirror: also flags_updated 0 and
# deleted 0), that each POP3 target Maildir holds N files and that each IMAP target holds, per
# folder, the source's number of messages, flags and internal dates (read from the Maildir file
# names and mtimes); any miss prints a line starting with FAIL and the script exits 1. Servers
# and the relay are stopped and every file removed on exit, even on Ctrl-C.
# Before the table, one line per case, rep and link gives its wall time and the CPU seconds of
# the process itself and of the source and target Dovecot during the run (on this 2-core machine
# the servers' CPU, not mailferry's, is most of the cost) and, on the slow link, what the relay
# saw per side: connections, "turns" (times the client spoke again after the server had: about
# the round trips it waited for) and bytes each way. Other work on the machine (a cargo build)
# moves the seconds by tens of percent: compare runs taken together.
# After the table: issue 17's targets, each with its ratio and pass or MISS (the POP3 copy
# within 1.05x of the baseline POP3 copy on loopback; on the slow link the POP3 and IMAP copies
# within 1.1x of the fastest baseline upload and >= 100x faster than the computed tool); then,
# on the slow link, the round trips each copy waited for per phase (setup, index, plan,
# transfer, verify, after) and side, from one extra untimed run with -vvv in rep 1
# (bench/round_trips.py reads its protocol trace).
#
# Memory (--memory; bench/memory.py, ~40 s at the defaults with 3 reps): issue 7's memory
# targets, on loopback only. The source gets a big mailbox: one B MB multipart/mixed message (a
# text part and one base64 attachment of random bytes, CRLF, generated at run time from the
# seed) among 4 small corpus messages, in one account read by POP3 and by IMAP; and the corpus
# as above at N and at L messages (the first N of the L are the same messages). Each mailbox is
# copied with `mailferry migrate` POP3 -> IMAP and IMAP -> IMAP into fresh target users, per
# rep, with the same checks as above plus: the big mailbox's target holds every source message
# byte for byte (SHA-256 after the test harness's normalize_crlf, as tests/support compares:
# Dovecot's Maildir stores the CRLF messages with LF line ends). It prints a line per run (CPU
# split and peak RSS), then a table of peak RSS (the largest over the reps) and RSS / largest
# message, then each target marked pass or MISS:
#   the big message costs at most 3x its size (peak RSS / message bytes), POP3 and IMAP;
#   peak RSS at L messages within +10% of N messages, POP3 and IMAP;
#   every corpus copy at most 64 MiB (the target is for the default --connections).
# A MISS is reported, not a failure: the exit status is 1 only for a failed check.
#
# Local stores (--local; bench/local.py, ~1.5 min with 3 reps at 10000 messages): issue 15's speed
# targets, on loopback only, with the IMAP account above at --count messages (default 10000).
# Per rep, each into a fresh directory in the bench's directory or a fresh target user:
#   baseline upload      bench/baseline.py's upload of the account's files, as in the main table
#   mbsync               (Debian isync, installed when missing) pulling the account into a
#                        Maildir: SubFolders Maildir++ (INBOX the root, `.Archive.2019`, as
#                        mailferry writes), Patterns *, Sync Pull, Create Near, Expunge None,
#                        CopyArrivalDate yes, its defaults otherwise (FSync yes, its default
#                        pipelining): the yardstick of the backup
#   mailferry IMAP -> maildir   migrate --from imap://… --to maildir:DIR  (target: <= 1.0x mbsync)
#   mailferry maildir no-op re-run   the same again: must copy 0      (target: <= 0.2 s)
#   mailferry maildir -> IMAP   migrate --from maildir:DIR --to imap://… into a fresh user
#                               (target: <= 1.1x the baseline upload of the same rep)
#   mailferry IMAP -> mbox, mbox no-op re-run, mbox -> IMAP   the same with mbox:DIR/
# It checks what bench.py checks, plus every Maildir written (mbsync's too) per folder: the
# source's messages, flags (file names) and dates (mtimes); each mbox file's number of
# messages; each restored account's folders, messages and dates (and flags, from a Maildir).
# The table has each row's ratio to its yardstick, and the targets are marked pass or MISS (a
# MISS is reported, not a failure). BENCH_DIR matters more here: on /dev/shm (the default) an
# fsync costs almost nothing, so the rows compare protocol and CPU; with BENCH_DIR=/tmp the
# disk and its fsyncs count, for both tools (each syncs every message), and the VM's disk makes
# the seconds noisier.
# Scale (--scale; bench/scale.py, ~25 min at the defaults on this 2-core machine, ~1 min with
# `--scale-count 3000 --scale-noop-count 1000 --scale-rss-count 500 --scale-accounts 50`):
# issue 17's targets, on loopback. The corpus is small messages (~4 KB text/plain, bench.py's
# headers, 2% without Message-ID, each numbered by an X-Bench-Seq header), written once and
# hard-linked into every source account that holds it: the large mailbox in one folder (IMAP,
# and a copy for POP3), the same over --scale-folders folders (a third in INBOX), its first
# --scale-noop-count and --scale-rss-count messages, and --scale-accounts accounts of
# --scale-account-messages each with all of theirs in one account too; Dovecot indexes them
# and dry runs warm its cache, untimed. Rows (each into fresh target users):
#   baseline upload (bench/baseline.py) of the one-folder and the wide account: the yardstick,
#   and the same client reading each account from the source server (baseline IMAP copy);
#   mailferry IMAP copy, POP3 copy (one folder), mirror first run: x baseline <= 1.1, peak
#   RSS <= 64 MiB; IMAP and POP3 no-op re-run <= 1 s; mirror no-op (CONDSTORE, median of 3)
#   <= 0.2 s; the first no-op re-run of the --scale-noop-count copy <= 0.2 s; peak RSS of the
#   large copy within +10% of the --scale-rss-count copy's; the batch (`mailferry batch
#   --jobs J --max-connections-per-host C`) <= 1.5x the one account holding its messages,
#   and at most C connections at either server at once (the bench samples /proc/net/tcp at
#   each server's port every 20 ms and counts the logins in Dovecot's log). A login floor
#   row (not mailferry: a raw connect, LOGIN, SELECT, LOGOUT per account on both servers, J at
#   once) shows what the servers charge per account (Dovecot starts two processes per
#   connection), which no batch goes under; the batch row also gives its ratio to the one
#   account plus that floor. Every run is checked: exit code, report (copied N then 0, failed
#   0, verified) or batch summary (every account ok), and on disk every source message
#   exactly once in its folder (by X-Bench-Seq) with its flags and internal date; a miss
#   prints FAIL and exits 1, a target missed is marked MISS.
#
# Loading: generating the files straight into the Maildirs takes ~1 s per 2000 messages (the
# IMAP account's files are hard links to the POP3 account's: same bytes, one copy in memory);
# `doveadm save` runs one process per message (~9 ms each here: ~17 s at N=2000, ~90 s at
# N=10000, just to load), so it is not used. Before the reps, untimed: the source Dovecot
# indexes every account, and one `mailferry migrate --dry-run` of each IMAP account fills the
# source's cache with the fields mailferry reads (as on a server in use).
#
# Needs root (Dovecot's mail processes run as nobody), python3, and Debian's dovecot-imapd +
# dovecot-pop3d, which it installs with apt-get when missing.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
COUNT=${N:-}
SEED=${SEED:-42}
CONNECTIONS=${CONNECTIONS:-}
REPS=${REPS:-}
NOOP_SAMPLES=${NOOP_SAMPLES:-3}
TRANSPORT=${TRANSPORT:-plain}
RTT_MS=${RTT_MS:-50}
RTT_COUNT=${RTT_COUNT:-1000}
CASE_TIMEOUT=${CASE_TIMEOUT:-300}
MEMORY=${MEMORY:-}
LOCAL=${LOCAL:-}
SCALE=${SCALE:-}
SCALE_ARGS=()
MEMORY_COUNT=${MEMORY_COUNT:-10000}
BIG_MB=${BIG_MB:-50}
while [ $# -gt 0 ]; do
  case $1 in
  --count) COUNT=$2; shift 2 ;;
  --rtt-count) RTT_COUNT=$2; shift 2 ;;
  --rtt-ms) RTT_MS=$2; shift 2 ;;
  --transport) TRANSPORT=$2; shift 2 ;;
  --case-timeout) CASE_TIMEOUT=$2; shift 2 ;;
  --seed) SEED=$2; shift 2 ;;
  --connections) CONNECTIONS=$2; shift 2 ;;
  --reps) REPS=$2; shift 2 ;;
  --noop-samples) NOOP_SAMPLES=$2; shift 2 ;;
  --memory) MEMORY=1; shift ;;
  --memory-count) MEMORY_COUNT=$2; shift 2 ;;
  --big-mb) BIG_MB=$2; shift 2 ;;
  --local) LOCAL=1; shift ;;
  --scale) SCALE=1; shift ;;
  --scale-*) SCALE_ARGS+=("$1" "$2"); shift 2 ;; # scale.py checks them
  -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$COUNT" ] || COUNT=$([ -n "$LOCAL" ] && echo 10000 || echo 2000)
[ -n "$REPS" ] || REPS=$([ -n "$SCALE" ] && echo 1 || echo 3)
for v in "$COUNT" "$REPS" "$NOOP_SAMPLES" "$RTT_COUNT" "$CASE_TIMEOUT" "$MEMORY_COUNT" \
  "$BIG_MB"; do
  case $v in '' | *[!0-9]* | 0)
    echo "--count, --rtt-count, --reps, --noop-samples, --case-timeout, --memory-count and" \
      "--big-mb take a positive integer" >&2
    exit 2
    ;;
  esac
done
case $RTT_MS in '' | *[!0-9]*)
  echo "--rtt-ms takes a whole number of milliseconds (0: no relayed link)" >&2
  exit 2
  ;;
esac
case $TRANSPORT in plain | tls) ;; *)
  echo "--transport is plain or tls" >&2
  exit 2
  ;;
esac
if [ "$(id -u)" != 0 ]; then
  echo "bench/run.sh must run as root (Dovecot runs mail as nobody)" >&2
  exit 2
fi

DOVECOT_SH="$ROOT/tests/support/dovecot.sh"
[ -f "$DOVECOT_SH" ] || { echo "missing $DOVECOT_SH" >&2; exit 2; }

if [ ! -x /usr/sbin/dovecot ] || ! command -v doveadm >/dev/null; then
  echo "== installing Dovecot (Debian packages dovecot-imapd, dovecot-pop3d)"
  timeout 600 apt-get update -qq
  DEBIAN_FRONTEND=noninteractive timeout 900 \
    apt-get install -y -qq dovecot-imapd dovecot-pop3d >/dev/null
fi

if [ -n "$LOCAL" ] && ! command -v mbsync >/dev/null; then
  echo "== installing mbsync (Debian package isync)"
  timeout 600 apt-get update -qq
  DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq isync >/dev/null
fi

if [ -z "${MAILFERRY:-}" ]; then
  echo "== building mailferry (release)"
  timeout 1800 cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
  MAILFERRY="$ROOT/target/release/mailferry"
fi
[ -x "$MAILFERRY" ] || { echo "no mailferry binary at $MAILFERRY" >&2; exit 2; }

# Short on purpose: Dovecot's sockets live in DIR/run and a socket path has 108 bytes at most.
WORK=$(mktemp -d "${BENCH_DIR:-/dev/shm}/mfb.XXXXXX")
chmod 0755 "$WORK" # mktemp's 0700 would lock out Dovecot's auth (user dovecot) and mail (nobody)
BENCH_PID=
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
  # On Ctrl-C or TERM, first the timed part and whatever it runs (its own process group), so
  # nothing writes into $WORK while it is removed.
  if [ -n "$BENCH_PID" ]; then
    kill -TERM -- "-$BENCH_PID" 2>/dev/null || true
    wait "$BENCH_PID" 2>/dev/null || true
  fi
  bash "$DOVECOT_SH" down "$WORK/src" >/dev/null 2>&1 || true
  bash "$DOVECOT_SH" down "$WORK/dst" >/dev/null 2>&1 || true
  [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM # runs the EXIT trap

# A port where nothing listens now. Another program may take it before Dovecot does; then
# dovecot.sh fails and start_server tries again with new ports.
free_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 30000))
    if ! timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null; then
      echo "$port"
      return
    fi
  done
}

PASSWORD=bench-secret # loopback-only throwaway servers
start_server() { # NAME "USER USER…"
  local users="" u attempt
  for u in $2; do users="$users $u:$PASSWORD"; done
  for attempt in 1 2 3; do
    # MAILFERRY_TEST_OWNER_PID: if this script is killed outright, dovecot.sh's watcher stops
    # the server anyway.
    # DOVECOT_TLS=no: plaintext only (no STARTTLS offered), as for the reference numbers.
    if IMAP_PORT=$(free_port) IMAPS_PORT=$(free_port) POP3_PORT=$(free_port) \
      POP3S_PORT=$(free_port) MAILFERRY_TEST_USERS="$users" MAILFERRY_TEST_OWNER_PID=$$ \
      DOVECOT_TLS=$([ "$TRANSPORT" = tls ] && echo yes || echo no) \
      bash "$DOVECOT_SH" up "$WORK/$1" >"$WORK/$1.env"; then
      return 0
    fi
    echo "   Dovecot $1 did not start (attempt $attempt); retrying with other ports" >&2
  done
  echo "FAIL: could not start Dovecot $1" >&2
  exit 1
}
port_of() { sed -n "s/^$2=127.0.0.1://p" "$WORK/$1.env"; }

echo "== starting source and target Dovecot on 127.0.0.1 (mail in $WORK)"
if [ -n "$LOCAL" ]; then
  # bench/local.py's: imap (and its POP3 twin pop); targets <lbase|lrestore|lmrestore><rep>.
  start_server src "pop imap bpop" # bpop: prepare_link's POP3 baseline maildrop
  start_server dst "warmup $(for r in $(seq 1 "$REPS"); do
    printf 'lbase%s lrestore%s lmrestore%s ' "$r" "$r" "$r"
  done)"
elif [ -n "$SCALE" ]; then
  # scale.py names the users, and checks the --scale-* arguments while it does (exit 2).
  src_users=$(python3 "$ROOT/bench/scale.py" users src --reps "$REPS" "${SCALE_ARGS[@]}") || exit 2
  dst_users=$(python3 "$ROOT/bench/scale.py" users dst --reps "$REPS" "${SCALE_ARGS[@]}") || exit 2
  start_server src "$src_users"
  start_server dst "$dst_users"
elif [ -n "$MEMORY" ]; then
  # bench/memory.py's: pop imap (N messages), kpop kimap (L), big (the big mailbox); targets
  # <s: N, k: L, b: big><pop|imap><rep>.
  start_server src "pop imap kpop kimap big bpop bkpop" # b…: prepare_link's POP3 baseline maildrops
  start_server dst "warmup $(for r in $(seq 1 "$REPS"); do
    for mailbox in s k b; do printf '%spop%s %simap%s ' "$mailbox" "$r" "$mailbox" "$r"; done
  done)"
else
  start_server src "pop imap rpop rimap bpop brpop"
  # Target users: <link: l loopback, r relay><case><rep>, each filled once.
  start_server dst "warmup $(for r in $(seq 1 "$REPS"); do
    for link in l r; do
      for case in base base4 base8 basecopy basepop import pop imap mirror phasepop phaseimap; do
        printf '%s%s%s ' "$link" "$case" "$r"
      done
    done
  done)"
fi
cat "$WORK/src/cert.pem" "$WORK/dst/cert.pem" >"$WORK/ca.pem"
if [ "$TRANSPORT" = tls ]; then
  SRC_POP3=$(port_of src pop3s) SRC_IMAP=$(port_of src imaps) DST_IMAP=$(port_of dst imaps)
else
  SRC_POP3=$(port_of src pop3) SRC_IMAP=$(port_of src imap) DST_IMAP=$(port_of dst imap)
fi

# In the background and waited for, so a signal reaches the trap at once rather than after the
# whole run; setsid gives it a process group of its own that cleanup can stop as a whole (in a
# script, without job control, setsid does not fork: $! is that group's id).
SHARED=(--count "$COUNT" --seed "$SEED" --reps "$REPS" --case-timeout "$CASE_TIMEOUT"
  --transport "$TRANSPORT" --src-dir "$WORK/src" --dst-dir "$WORK/dst" --password "$PASSWORD"
  --src-pop3-port "$SRC_POP3" --src-imap-port "$SRC_IMAP" --dst-imap-port "$DST_IMAP"
  --ca "$WORK/ca.pem" --mailferry "$MAILFERRY" ${CONNECTIONS:+--connections "$CONNECTIONS"}
  --work "$WORK")
if [ -n "$LOCAL" ]; then
  setsid python3 "$ROOT/bench/local.py" "${SHARED[@]}" &
elif [ -n "$SCALE" ]; then
  setsid python3 "$ROOT/bench/scale.py" "${SHARED[@]}" "${SCALE_ARGS[@]}" &
elif [ -n "$MEMORY" ]; then
  setsid python3 "$ROOT/bench/memory.py" "${SHARED[@]}" --memory-count "$MEMORY_COUNT" \
    --big-mb "$BIG_MB" &
else
  setsid python3 "$ROOT/bench/bench.py" "${SHARED[@]}" --noop-samples "$NOOP_SAMPLES" \
    --rtt-ms "$RTT_MS" --rtt-count "$RTT_COUNT" --src-user pop --imap-user imap \
    --rtt-src-user rpop --rtt-imap-user rimap ${TRACE:+--trace} &
fi
BENCH_PID=$!
rc=0
wait "$BENCH_PID" || rc=$?
BENCH_PID=
exit "$rc"
