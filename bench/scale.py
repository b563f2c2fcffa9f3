#!/usr/bin/env python3
"""scale.py — the timed part of `bench/run.sh --scale`: how mailferry's cost grows with the
mailbox and the number of accounts (issue 17's "100,000 messages", "RSS flat" and "1,000
accounts" rows), on loopback.

bench/run.sh starts the two Dovecot servers with the users `python3 bench/scale.py users SIDE`
names and calls this instead of bench.py; it is not meant to be run by hand (run.sh's header
documents the knobs). It uses bench.py's corpus pieces, loading, timing and checks. Python 3
standard library only.

Steps:
  1. generate max(--scale-count, --scale-noop-count, --scale-rss-count, accounts x messages)
     small messages (~4 KB text/plain, headers from bench.py's corpus, 2% without Message-ID,
     each with an X-Bench-Seq header that numbers it) from --seed, each written once and
     hard-linked into every source account that holds it (see SOURCE_USERS); flags as bench.py
     draws them;
  2. have the source Dovecot index every account (untimed, one doveadm for the many small
     ones) and check it sees every message; one untimed dry run per large account and one
     batch dry run warm its cache with the fields mailferry fetches;
  3. per rep, each into fresh target users: the pipelined-upload baseline (bench/baseline.py)
     of the one-folder and the 100-folder account; mailferry's IMAP copy of each then a no-op
     re-run, a mirror first run then no-op runs; the POP3 copy of the one-folder mailbox then a
     no-op re-run; an IMAP copy of --scale-noop-count messages then its first no-op re-run; an
     IMAP copy of --scale-rss-count messages (peak RSS against the large one's); the POP3
     read floor (a raw session's LIST, UIDL and TOP of every message: not mailferry); the
     --scale-accounts accounts in one `mailferry batch --jobs J --max-connections-per-host M`
     and their messages in one account; while each of the last two runs, the bench samples the
     established connections at each server's IMAP port (/proc/net/tcp, every 20 ms) and counts
     the logins in each Dovecot's log;
  4. check every run: exit code 0, the report (copied N then 0, failed 0, verified), and on
     disk, per folder of every target, every source message exactly once (by X-Bench-Seq) with
     its flags and internal date;
  then a table with every row, its ratio or value against issue 17's target, pass or MISS.
Exit status: 0 when every check passed (a MISS of a target is reported, not a failure), 1 when
any FAIL line was printed.
"""
import argparse
import collections
import concurrent.futures
import grp
import json
import math
import os
import pwd
import random
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time

import bench

# Source accounts (run.sh creates them): the large mailbox in one folder (IMAP, and a copy of it
# for POP3: a POP3 session marks what it reads \Seen), the same messages over WIDE_FOLDERS
# folders, the no-op and RSS mailboxes (the first messages of the large one), and the batch's
# accounts with the same messages all in one account.
ONE, POP, WIDE, NOOP, SMALL, WHOLE = "one", "onepop", "wide", "noop", "small", "whole"
# Issue 17's targets.
MAX_PER_MESSAGE = 1.1
MAX_RSS_MIB = 64
MAX_NOOP_S = 1.0
MAX_MIRROR_NOOP_S = 0.2
MAX_FIRST_NOOP_S = 0.2
MAX_RSS_GROWTH = 0.10
MAX_BATCH_RATIO = 1.5
NOOP_SAMPLES = 3
# TOP commands the POP3 read floor keeps in flight (mailferry's POP3 client keeps 1,024).
POP3_FLOOR_WINDOW = 1024
SEQ = re.compile(rb"X-Bench-Seq: (\d+)")
LOGIN = re.compile(rb"-login: (?:Info: )?Login: ")


def positive(text):
    """argparse type: a whole number above 0."""
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(text)


def add_scale_args(ap):
    """The --scale-* knobs (run.sh passes them through), also needed to name the users."""
    ap.add_argument("--scale-count", type=positive, default=100_000,
                    help="messages in the large mailbox (one folder, and over --scale-folders)")
    ap.add_argument("--scale-folders", type=positive, default=100,
                    help="folders of the wide account")
    ap.add_argument("--scale-noop-count", type=positive, default=10_000,
                    help="messages of the first no-op re-run row")
    ap.add_argument("--scale-rss-count", type=positive, default=2_000,
                    help="messages of the small mailbox the large one's peak RSS is held to")
    ap.add_argument("--scale-accounts", type=positive, default=1_000, help="accounts in the batch")
    ap.add_argument("--scale-account-messages", type=positive, default=20,
                    help="messages in each batch account")
    ap.add_argument("--scale-jobs", type=positive, default=8, help="the batch's --jobs")
    ap.add_argument("--scale-max-connections", type=positive, default=24,
                    help="the batch's --max-connections-per-host")


def account(k):
    return f"a{k:04d}"


def users(side, a):
    """The users one server needs: the source accounts, or every rep's targets."""
    accounts = [account(k) for k in range(1, a.scale_accounts + 1)]
    if side == "src":
        return [ONE, POP, WIDE, NOOP, SMALL, WHOLE, *accounts]
    out = ["warmup"]
    for rep in range(1, a.reps + 1):
        out += [f"{case}{rep}" for case in ("tbase", "twbase", "tcbase", "twcbase", "tone", "tpop", "twide", "tmir",
                                            "twmir", "tnoop", "tsmall", "twhole")]
        out += [f"r{rep}{name}" for name in accounts]
    return out


# ----------------------------------------------------------------------------------------------
# Corpus and loading
# ----------------------------------------------------------------------------------------------

def small_message(corpus, i):
    """Message number i: ~4 KB of text/plain with bench.py's headers, numbered by its first
    header. Returns (bytes, delivery time)."""
    rng = corpus.rng
    ts = rng.randint(bench.DATE_FROM, bench.DATE_TO)
    mid = None if rng.random() < 0.02 else \
        f"<{ts}.{rng.getrandbits(40):010x}.{i}@scale.example>"
    head = corpus.headers(i, ts, mid, "Content-Type: text/plain; charset=us-ascii\r\n"
                                      "Content-Transfer-Encoding: 7bit")
    raw = f"X-Bench-Seq: {i}\r\n{head}{corpus.text(rng.randint(2_000, 3_600), i)}".encode()
    return raw, ts + rng.randint(5, 600)


def wide_folder(k):
    return "INBOX" if k == 0 else f"Archive/{k:03d}"


class Layout:
    """Where each message goes: {user: {folder: [(seq, flag letters, delivery time)]}}."""

    def __init__(self):
        self.accounts = collections.defaultdict(lambda: collections.defaultdict(list))

    def add(self, user, folder, entry):
        self.accounts[user][folder].append(entry)

    def seqs(self, user):
        """{folder: Counter of X-Bench-Seq} the account holds."""
        return {folder: collections.Counter(e[0] for e in entries)
                for folder, entries in self.accounts[user].items()}

    def count(self, user):
        return sum(len(entries) for entries in self.accounts[user].values())


def load(a, src_mail):
    """Writes the corpus once into a staging directory of the source server and hard-links
    each message into every account that holds it (cur/, with its flags; the POP3 account's
    new/, without). Returns the Layout and the corpus statistics."""
    uid, gid = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
    per_account = a.scale_account_messages
    total = max(a.scale_count, a.scale_noop_count, a.scale_rss_count,
                a.scale_accounts * per_account)
    staging = f"{src_mail}/.staging"
    bench.make_maildir(staging, uid, gid)
    folders = {ONE: ["INBOX"], POP: ["INBOX"], NOOP: ["INBOX"], SMALL: ["INBOX"],
               WHOLE: ["INBOX"], WIDE: [wide_folder(k) for k in range(a.scale_folders)]}
    folders.update({account(k): ["INBOX"] for k in range(1, a.scale_accounts + 1)})
    for user, names in folders.items():
        os.makedirs(f"{src_mail}/{user}", exist_ok=True)
        os.chown(f"{src_mail}/{user}", uid, gid)
        for folder in names:
            bench.make_maildir(bench.folder_dir(f"{src_mail}/{user}/Maildir", folder), uid, gid)
    corpus = bench.Corpus(a.seed)
    layout_rng = random.Random(f"scale-{a.seed}")
    layout = Layout()
    stats = {"bytes": 0, "max": 0, "no-id": 0}
    for i in range(1, total + 1):
        raw, delivered = small_message(corpus, i)
        path = bench.deliver(staging, i, raw, delivered, uid, gid)
        name = os.path.basename(path)
        letters = "".join(sorted(letter for _, letter, p in bench.FLAGS
                                 if layout_rng.random() < p))
        # The wide account: a third in INBOX, the rest spread evenly.
        k = 0 if layout_rng.random() < 1 / 3 or a.scale_folders == 1 else \
            layout_rng.randrange(1, a.scale_folders)
        holders = []
        if i <= a.scale_count:
            holders += [(ONE, "INBOX"), (WIDE, wide_folder(k))]
            os.link(path, f"{src_mail}/{POP}/Maildir/new/{name}")
            layout.add(POP, "INBOX", (i, "", delivered))
            stats["bytes"] += len(raw)
            stats["max"] = max(stats["max"], len(raw))
            stats["no-id"] += b"\r\nMessage-ID: " not in raw
        if i <= a.scale_noop_count:
            holders.append((NOOP, "INBOX"))
        if i <= a.scale_rss_count:
            holders.append((SMALL, "INBOX"))
        if i <= a.scale_accounts * per_account:
            holders += [(WHOLE, "INBOX"), (account((i - 1) // per_account + 1), "INBOX")]
        for user, folder in holders:
            os.link(path, f"{bench.folder_dir(f'{src_mail}/{user}/Maildir', folder)}/cur/"
                          f"{name}:2,{letters}")
            layout.add(user, folder, (i, letters, delivered))
    shutil.rmtree(staging)
    return layout, stats


def doveadm_counts(a, env, limit, users_file):
    """{user: messages in INBOX and every folder} as the source Dovecot sees them, for every
    user in users_file, in one doveadm: opening each folder makes Dovecot index it now."""
    argv = ["doveadm", "-c", f"{a.src_dir}/dovecot.conf", "-f", "tab", "mailbox", "status",
            "-F", users_file, "messages", "*"]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=limit)
    seen = collections.Counter()
    lines = out.stdout.splitlines()
    for line in lines[1:]:
        fields = line.split("\t")
        if len(fields) >= 3 and fields[-1].isdigit():
            seen[fields[0]] += int(fields[-1])
    return out.returncode, seen, out.stderr.strip()


def prepare(a, env, limit, fail, layout):
    """Indexes every source account and warms the source's cache (untimed). Returns False
    after a fail()."""
    t0 = time.monotonic()
    users_file = f"{a.work}/source-users"
    with open(users_file, "w") as f:
        f.write("".join(f"{u}\n" for u in layout.accounts))
    rc, seen, err = doveadm_counts(a, env, limit * 4, users_file)
    want = {u: layout.count(u) for u in layout.accounts}
    if rc != 0 or dict(seen) != want:
        wrong = [u for u in want if seen.get(u) != want[u]][:5]
        fail(f"the source Dovecot does not see every message (e.g. {[(u, seen.get(u), want[u]) for u in wrong]}): {err}")
        return False
    security, scheme = security_args(a)
    ferry_env = password_env(env, a)
    for user in (ONE, WIDE, NOOP, SMALL, WHOLE):
        argv = [a.mailferry, "migrate", "--dry-run", "--quiet", *security,
                "--report", f"{a.work}/report-warmup-{user}.json",
                "--from", f"{scheme}://{user}@127.0.0.1:{a.src_imap_port}",
                "--to", f"{scheme}://warmup@127.0.0.1:{a.dst_imap_port}"]
        rc, _, _, _ = bench.timed(argv, ferry_env, f"{a.work}/warmup-{user}.log", limit)
        if rc != 0:
            fail(f"warm-up dry run of {user} exited {rc}:\n"
                 f"{bench.tail(f'{a.work}/warmup-{user}.log')}")
            return False
    accounts_csv = write_accounts(a, "warmup", lambda name: "warmup")
    argv = [a.mailferry, "batch", accounts_csv, "--dry-run", "--quiet", *security,
            "--jobs", str(a.scale_jobs), "--report-dir", f"{a.work}/warmup-batch"]
    rc, _, _, _ = bench.timed(argv, ferry_env, f"{a.work}/warmup-batch.log", limit * 4)
    if rc != 0:
        fail(f"warm-up batch dry run exited {rc}:\n{bench.tail(f'{a.work}/warmup-batch.log')}")
        return False
    shutil.rmtree(f"{a.dst_dir}/mail/warmup", ignore_errors=True)
    print(f"   source Dovecot indexed {len(want)} accounts, and dry runs warmed its cache, in "
          f"{time.monotonic() - t0:.1f} s (untimed)", flush=True)
    return True


# ----------------------------------------------------------------------------------------------
# Runs and checks
# ----------------------------------------------------------------------------------------------

def security_args(a):
    if a.transport == "plain":
        return ["--allow-plaintext"], "imap"
    return ["--tls-ca", a.ca], "imaps"


def password_env(env, a):
    return dict(env, MAILFERRY_FROM_PASSWORD=a.password, MAILFERRY_TO_PASSWORD=a.password)


def write_accounts(a, tag, target_of):
    """The batch's accounts file: every batch account into target_of(its name)."""
    _, scheme = security_args(a)
    path = f"{a.work}/accounts-{tag}.csv"
    with open(path, "w") as f:
        f.write("from,to\n")
        for k in range(1, a.scale_accounts + 1):
            name = account(k)
            f.write(f"{scheme}://{name}@127.0.0.1:{a.src_imap_port},"
                    f"{scheme}://{target_of(name)}@127.0.0.1:{a.dst_imap_port}\n")
    return path


def seq_tree(maildir):
    """{folder: Counter of X-Bench-Seq} of a Maildir++ on disk (folders as bench.maildir_tree
    names them)."""
    out = {}
    try:
        dirs = [""] + [d for d in os.listdir(maildir) if d.startswith(".")
                       and os.path.isdir(f"{maildir}/{d}/cur")]
    except FileNotFoundError:
        return out
    for d in dirs:
        seqs = collections.Counter()
        for sub in ("cur", "new"):
            base = f"{maildir}/{d}/{sub}" if d else f"{maildir}/{sub}"
            for name in os.listdir(base) if os.path.isdir(base) else []:
                with open(f"{base}/{name}", "rb") as f:
                    found = SEQ.search(f.read(512))
                seqs[int(found.group(1)) if found else -1] += 1
        if seqs:
            out[d or "INBOX"] = seqs
    return out


def tree_name(maildir, folder):
    """A folder's key in seq_tree() and bench.maildir_tree()."""
    path = bench.folder_dir(maildir, folder)
    return "INBOX" if path == maildir else os.path.basename(path)


def check_target(case, rep, layout, source_user, maildir, fail, source_maildir=None):
    """Every message of the source account exactly once in its folder of the target; with
    source_maildir, also the flags and dates of each folder (bench.compare_trees)."""
    want = {tree_name(maildir, folder): seqs
            for folder, seqs in layout.seqs(source_user).items()}
    got = seq_tree(maildir)
    for folder in sorted(set(want) | set(got)):
        w, g = want.get(folder, collections.Counter()), got.get(folder, collections.Counter())
        missing, extra = w - g, g - w
        if missing or extra:
            fail(f"rep {rep}: {case}: folder {folder}: {sum(missing.values())} source "
                 f"messages missing (e.g. {sorted(missing)[:3]}), {sum(extra.values())} "
                 f"extra or duplicated (e.g. {sorted(extra)[:3]})")
    if source_maildir:
        bench.check_tree(case, rep, bench.maildir_tree(source_maildir), maildir, fail)


class ConnectionCount:
    """The established connections at some server ports, sampled from /proc/net/tcp while a
    run goes on (peak per port), and the logins each Dovecot's log records meanwhile."""

    def __init__(self, ports, logs):
        self.ports = {port: 0 for port in ports}
        self.logs = {log: os.path.getsize(log) for log in logs}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()

    def sample(self):
        hexports = {f"{port:04X}": port for port in self.ports}
        while not self.stop.wait(0.02):
            now = collections.Counter()
            with open("/proc/net/tcp") as f:
                next(f)
                for line in f:
                    fields = line.split(None, 4)
                    port = hexports.get(fields[1].rsplit(":", 1)[1])
                    if port and fields[3] == "01":  # ESTABLISHED, on the server's side
                        now[port] += 1
            for port, n in now.items():
                self.ports[port] = max(self.ports[port], n)

    def finish(self):
        """({port: peak connections}, {log: logins})."""
        self.stop.set()
        self.thread.join()
        logins = {}
        for log, offset in self.logs.items():
            with open(log, "rb") as f:
                f.seek(offset)
                logins[log] = len(LOGIN.findall(f.read()))
        return self.ports, logins


def copy_runs(a, rep, env, limit, fail, layout, source_user, target, cases, from_url,
              to_folder="", mirror=False):
    """A copy of one account into a fresh target user, then no-op re-runs: cases are the
    rows' names ([copy, no-op] or, for a mirror, [first run, no-op] with NOOP_SAMPLES no-op
    runs, the median kept). Checks every run. Returns {case: Row}."""
    security, scheme = security_args(a)
    n = layout.count(source_user)
    out = {}
    state = f"{a.work}/state-{target}"
    samples = []
    for k in range(1 + (NOOP_SAMPLES if mirror else 1)):
        case = cases[min(k, 1)]
        report, log = f"{a.work}/report-{target}-{k}.json", f"{a.work}/{target}-{k}.log"
        argv = [a.mailferry, "mirror" if mirror else "migrate", "--from", from_url,
                "--to", f"{scheme}://{target}@127.0.0.1:{a.dst_imap_port}{to_folder}",
                "--report", report, "--quiet", *security]
        if mirror:
            argv += ["--state", state]
        copied = n if k == 0 else 0
        want = {"source_messages": n, "copied": copied, "already_present": n - copied,
                "failed": 0, "verified": True}
        if mirror:
            want.update(flags_updated=0, deleted=0)
        row, _ = bench.run_mailferry(a, case, argv, want, report, log, password_env(env, a),
                                     limit, fail, rep, None)
        bench.print_cpu_line(rep, "loopback", case, row, f"; peak RSS {row.rss:.1f} MiB")
        if k == 0:
            out[case] = row
        else:
            samples.append(row)
    samples.sort(key=lambda r: r.secs)
    out[cases[1]] = samples[len(samples) // 2]
    maildir = f"{a.dst_dir}/mail/{target}/Maildir"
    source = None if source_user == POP else f"{a.src_dir}/mail/{source_user}/Maildir"
    check_target(cases[0], rep, layout, source_user, maildir, fail, source)
    shutil.rmtree(os.path.dirname(maildir), ignore_errors=True)
    shutil.rmtree(state, ignore_errors=True)
    return out


def baseline_run(a, rep, env, limit, fail, layout, source_user, target, case, copy=False):
    """bench/baseline.py (not mailferry) into a fresh target user: the account's files, or with
    copy, the account read from the source server (as mailferry reads it). Checks the
    target."""
    maildir = f"{a.src_dir}/mail/{source_user}/Maildir"
    link = {"name": "loopback", "count": layout.count(source_user)}
    source = ["--copy-port", str(a.src_imap_port), "--copy-user", source_user] if copy \
        else ["--maildir", maildir]
    row = bench.run_baseline(a, link, source, target, a.dst_imap_port, env, limit,
                             f"{a.work}/{target}.log", fail, rep)
    bench.print_cpu_line(rep, "loopback", case, row, f"; peak RSS {row.rss:.1f} MiB")
    check_target(case, rep, layout, source_user, f"{a.dst_dir}/mail/{target}/Maildir", fail,
                 maildir)
    shutil.rmtree(f"{a.dst_dir}/mail/{target}", ignore_errors=True)
    return row


def login_floor(a, rep, fail):
    """NOT mailferry: what the servers charge per account before any mail moves. For every
    batch account, --scale-jobs at a time, a raw IMAP session on each server (connect, LOGIN,
    SELECT INBOX, LOGOUT; TLS with --transport tls), as a batch needs at least. Dovecot starts
    a login process and a mail process per connection, so this is a floor for the batch row
    that no client can go under. Returns a Row (wall seconds)."""
    ctx = None
    if a.transport == "tls":
        ctx = ssl.create_default_context(cafile=a.ca)

    def session(port, user):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
            conn = ctx.wrap_socket(raw, server_hostname="127.0.0.1") if ctx else raw
            stream = conn.makefile("rwb")
            stream.readline()
            stream.write(f"a LOGIN {user} {a.password}\r\nb SELECT INBOX\r\n"
                         "c LOGOUT\r\n".encode())
            stream.flush()
            answers = {}
            for line in stream:
                if line[:2] in (b"a ", b"b ", b"c "):
                    answers[line[:1]] = line.split()[1]
                    if line.startswith(b"c "):
                        break
            return answers == {b"a": b"OK", b"b": b"OK", b"c": b"OK"}

    def one_account(k):
        return session(a.src_imap_port, account(k)) and \
            session(a.dst_imap_port, f"r{rep}{account(k)}")

    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(a.scale_jobs) as pool:
        ok = list(pool.map(one_account, range(1, a.scale_accounts + 1)))
    secs = time.monotonic() - start
    if not all(ok):
        fail(f"rep {rep}: login floor: {ok.count(False)} accounts could not log in")
    return bench.Row(secs, None, 0.0, 0.0)


def pop3_read_floor(a, rep, fail, user):
    """NOT mailferry: what the POP3 server charges for the reads a POP3 no-op needs. One raw
    session (TLS with --transport tls) sends LIST and UIDL, then TOP n 0 for every message,
    POP3_FLOOR_WINDOW in flight, and counts the answers' ends without parsing them. Times from
    LIST to the last TOP's answer: a floor for the POP3 no-op row that no client reading every
    message's header goes under. Returns a Row (wall seconds; NaN when it failed, after
    fail())."""
    try:
        return bench.Row(pop3_reads(a, user), None, 0.0, 0.0)
    except (OSError, ValueError) as err:
        fail(f"rep {rep}: POP3 read floor: {err}")
        return bench.Row(math.nan, None, 0.0, 0.0)


def pop3_reads(a, user):
    """The seconds of pop3_read_floor's reads; OSError or ValueError when they fail."""
    end = b"\r\n.\r\n"
    with socket.create_connection(("127.0.0.1", a.src_pop3_port), timeout=60) as raw:
        conn = raw
        if a.transport == "tls":
            ctx = ssl.create_default_context(cafile=a.ca)
            conn = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        stream = conn.makefile("rwb")
        stream.readline()
        stream.write(f"USER {user}\r\nPASS {a.password}\r\nSTAT\r\n".encode())
        stream.flush()
        answers = [stream.readline() for _ in range(3)]
        if not all(line.startswith(b"+OK") for line in answers):
            raise ValueError(f"the server answered {answers}")
        count = int(answers[2].split()[1])
        ends, tail = 0, b""

        def until(total):
            nonlocal ends, tail
            while ends < total:
                chunk = stream.read1(1 << 20)
                if not chunk:
                    raise OSError("the POP3 server closed the connection")
                seen = tail + chunk
                ends += seen.count(end)
                tail = seen[-(len(end) - 1):]

        start = time.monotonic()
        stream.write(b"LIST\r\nUIDL\r\n")
        stream.flush()
        sent = 0
        while sent < count:
            upto = min(count, sent + POP3_FLOOR_WINDOW // 2)
            stream.write(b"".join(b"TOP %d 0\r\n" % i for i in range(sent + 1, upto + 1)))
            stream.flush()
            sent = upto
            until(2 + max(0, sent - POP3_FLOOR_WINDOW // 2))
        until(2 + count)
        secs = time.monotonic() - start
        stream.write(b"QUIT\r\n")
        stream.flush()
    return secs


def batch_runs(a, rep, env, limit, fail, layout):
    """The batch of every account, and the same messages in one account, each with the
    connections counted at the servers. Returns {case: (Row, peaks, logins)}."""
    security, scheme = security_args(a)
    n = layout.count(WHOLE)
    ports = (a.src_imap_port, a.dst_imap_port)
    logs = (f"{a.src_dir}/dovecot.log", f"{a.dst_dir}/dovecot.log")
    out = {}

    whole_case = f"one account of {n} (migrate)"
    target = f"twhole{rep}"
    report, log = f"{a.work}/report-{target}.json", f"{a.work}/{target}.log"
    argv = [a.mailferry, "migrate", "--from", f"{scheme}://{WHOLE}@127.0.0.1:{a.src_imap_port}",
            "--to", f"{scheme}://{target}@127.0.0.1:{a.dst_imap_port}", "--report", report,
            "--quiet", *security]
    want = {"source_messages": n, "copied": n, "failed": 0, "verified": True}
    counter = ConnectionCount(ports, logs)
    row, _ = bench.run_mailferry(a, whole_case, argv, want, report, log, password_env(env, a),
                                 limit, fail, rep, None)
    out[whole_case] = (row, *counter.finish())
    check_target(whole_case, rep, layout, WHOLE, f"{a.dst_dir}/mail/{target}/Maildir", fail)
    shutil.rmtree(f"{a.dst_dir}/mail/{target}", ignore_errors=True)

    floor_case = f"login floor, {a.scale_accounts} accounts (not mailferry)"
    before = bench.server_cpu(a.src_dir), bench.server_cpu(a.dst_dir)
    row = login_floor(a, rep, fail)
    time.sleep(0.3)
    row.servers = [bench.server_cpu(d) - b for d, b in zip((a.src_dir, a.dst_dir), before)]
    out[floor_case] = (row, None, None)

    batch_case = (f"batch {a.scale_accounts} x {a.scale_account_messages} (--jobs "
                  f"{a.scale_jobs})")
    csv = write_accounts(a, f"rep{rep}", lambda name: f"r{rep}{name}")
    reports = f"{a.work}/batch-{rep}"
    argv = [a.mailferry, "batch", csv, "--jobs", str(a.scale_jobs), "--max-connections-per-host",
            str(a.scale_max_connections), "--report-dir", reports, "--quiet", *security]
    log = f"{a.work}/batch-{rep}.log"
    before = bench.server_cpu(a.src_dir), bench.server_cpu(a.dst_dir)
    counter = ConnectionCount(ports, logs)
    rc, secs, rss, cpu = bench.timed(argv, password_env(env, a), log, limit * 4)
    time.sleep(0.3)
    peaks, logins = counter.finish()
    servers = [bench.server_cpu(d) - b for d, b in zip((a.src_dir, a.dst_dir), before)]
    row = bench.Row(secs, None, rss, cpu, servers)
    out[batch_case] = (row, peaks, logins)
    if rc != 0:
        fail(f"rep {rep}: {batch_case}: mailferry exited {rc}:\n{bench.tail(log)}")
    try:
        with open(f"{reports}/summary.json") as f:
            summary = json.load(f)
    except (OSError, ValueError) as e:
        summary = {}
        fail(f"rep {rep}: {batch_case}: no readable summary.json: {e}")
    if summary and (summary.get("ok"), summary.get("copied"), summary.get("failed_messages")) \
            != (a.scale_accounts, n, 0):
        fail(f"rep {rep}: {batch_case}: summary says ok={summary.get('ok')}, copied="
             f"{summary.get('copied')}, failed_messages={summary.get('failed_messages')}; "
             f"expected {a.scale_accounts}, {n}, 0")
    for k in range(1, a.scale_accounts + 1):
        target = f"r{rep}{account(k)}"
        check_target(batch_case, rep, layout, account(k), f"{a.dst_dir}/mail/{target}/Maildir",
                     fail)
        shutil.rmtree(f"{a.dst_dir}/mail/{target}", ignore_errors=True)
    for case, (row, peaks, logins) in out.items():
        bench.print_cpu_line(rep, "loopback", case, row, "" if peaks is None else (
            f"; peak RSS {row.rss:.1f} MiB; peak connections: source {peaks[ports[0]]}, "
            f"target {peaks[ports[1]]}; logins: source {logins[logs[0]]}, target "
            f"{logins[logs[1]]}"))
    return out


def run_rep(a, rep, env, limit, fail, layout):
    """Every case of one rep. Returns {case: Row} and the batch's {case: (Row, peaks,
    logins)}."""
    security, scheme = security_args(a)
    pop_scheme = "pop3" if a.transport == "plain" else "pop3s"

    def src(user, port=a.src_imap_port, proto=scheme):
        return f"{proto}://{user}@127.0.0.1:{port}"

    n, w = a.scale_count, a.scale_folders
    rows = {}
    for user, folders, tag in ((ONE, "1 folder", ""), (WIDE, f"{w} folders", "w")):
        for kind, copy in (("upload", False), ("IMAP copy", True)):
            case = f"baseline {kind}, {n} in {folders}"
            target = f"t{tag}{'c' if copy else ''}base{rep}"
            rows[case] = baseline_run(a, rep, env, limit, fail, layout, user, target, case,
                                      copy)
    for user, target, cases, url, folder, mirror in (
            (ONE, f"tone{rep}", (f"IMAP copy, {n} in 1 folder", f"IMAP no-op, {n} in 1 folder"),
             src(ONE), "", False),
            (POP, f"tpop{rep}", (f"POP3 copy, {n}", f"POP3 no-op, {n}"),
             src(POP, a.src_pop3_port, pop_scheme), "/INBOX", False),
            (ONE, f"tmir{rep}", (f"mirror first run, {n} in 1 folder",
                                 f"mirror no-op, {n} in 1 folder"), src(ONE), "", True),
            (WIDE, f"twide{rep}", (f"IMAP copy, {n} in {w} folders",
                                   f"IMAP no-op, {n} in {w} folders"), src(WIDE), "", False),
            (WIDE, f"twmir{rep}", (f"mirror first run, {n} in {w} folders",
                                   f"mirror no-op, {n} in {w} folders"), src(WIDE), "", True),
            (NOOP, f"tnoop{rep}", (f"IMAP copy, {a.scale_noop_count}",
                                   f"IMAP first no-op, {a.scale_noop_count}"), src(NOOP), "",
             False),
            (SMALL, f"tsmall{rep}", (f"IMAP copy, {a.scale_rss_count}",
                                     f"IMAP no-op, {a.scale_rss_count}"), src(SMALL), "",
             False)):
        rows.update(copy_runs(a, rep, env, limit, fail, layout, user, target, cases, url,
                              folder, mirror))
    floor = f"POP3 read floor, {n} (not mailferry)"
    before = bench.server_cpu(a.src_dir)
    rows[floor] = pop3_read_floor(a, rep, fail, POP)
    time.sleep(0.3)
    rows[floor].servers = [bench.server_cpu(a.src_dir) - before, 0.0]
    bench.print_cpu_line(rep, "loopback", floor, rows[floor])
    return rows, batch_runs(a, rep, env, limit, fail, layout)


# ----------------------------------------------------------------------------------------------
# The table
# ----------------------------------------------------------------------------------------------

def print_table(a, stats, reps):
    """One row per case (medians over the reps; peak RSS the largest), then the targets."""
    n, w = a.scale_count, a.scale_folders
    pop_floor = f"POP3 read floor, {n} (not mailferry)"

    def secs(case):
        return bench.median([rows[case].secs for rows, _ in reps])

    def rss(case):
        return max(rows[case].rss for rows, _ in reps)

    def ratio(case, base):
        return bench.median([rows[case].secs / rows[base].secs for rows, _ in reps])

    batch = [b for _, b in reps]
    head = ("case", "messages", "seconds", "msg/s", "peak RSS MiB", "measure", "target", "")
    body = []

    def row(case, count, measure, target, ok, seconds=None, peak=None):
        s = secs(case) if seconds is None else seconds
        body.append((case, str(count), f"{s:.3f}" if s < 1 else f"{s:.2f}",
                     f"{count / s:.0f}", f"{rss(case) if peak is None else peak:.1f}",
                     measure, target, "pass" if ok else "MISS"))

    for base, folders in ((f"baseline upload, {n} in 1 folder", "1 folder"),
                          (f"baseline upload, {n} in {w} folders", f"{w} folders")):
        body.append((base, str(n), f"{secs(base):.2f}", f"{n / secs(base):.0f}",
                     f"{rss(base):.1f}", "yardstick", "", ""))
        copy_base = f"baseline IMAP copy, {n} in {folders}"
        body.append((copy_base, str(n), f"{secs(copy_base):.2f}", f"{n / secs(copy_base):.0f}",
                     f"{rss(copy_base):.1f}", f"{ratio(copy_base, base):.2f}x baseline", "",
                     ""))
        copies = [f"IMAP copy, {n} in {folders}", f"mirror first run, {n} in {folders}"]
        if folders == "1 folder":
            copies.insert(1, f"POP3 copy, {n}")
        for case in copies:
            r = ratio(case, base)
            of_copy = "" if case.startswith("POP3") else \
                f" ({ratio(case, copy_base):.2f}x copy)"
            row(case, n, f"{r:.2f}x baseline{of_copy}",
                f"<= {MAX_PER_MESSAGE}x, <= {MAX_RSS_MIB} MiB",
                r <= MAX_PER_MESSAGE and rss(case) <= MAX_RSS_MIB)
        noops = [(f"IMAP no-op, {n} in {folders}", MAX_NOOP_S),
                 (f"mirror no-op, {n} in {folders}", MAX_MIRROR_NOOP_S)]
        if folders == "1 folder":
            noops.insert(1, (f"POP3 no-op, {n}", MAX_NOOP_S))
        for case, limit in noops:
            measure = f"{secs(case):.3f} s"
            if case.startswith("POP3"):
                measure += f" ({ratio(case, pop_floor):.2f}x read floor)"
            row(case, n, measure, f"<= {limit} s", secs(case) <= limit)
        if folders == "1 folder":
            body.append((pop_floor, str(n), f"{secs(pop_floor):.3f}", f"{n / secs(pop_floor):.0f}",
                         "-", "LIST, UIDL, TOP n 0 x n", "", ""))
    first = f"IMAP first no-op, {a.scale_noop_count}"
    row(f"IMAP copy, {a.scale_noop_count}", a.scale_noop_count, "", "", True)
    row(first, a.scale_noop_count, f"{secs(first):.3f} s", f"<= {MAX_FIRST_NOOP_S} s",
        secs(first) <= MAX_FIRST_NOOP_S)
    small, large = f"IMAP copy, {a.scale_rss_count}", f"IMAP copy, {n} in 1 folder"
    growth = rss(large) / rss(small) - 1
    row(small, a.scale_rss_count, f"RSS {n}: {growth:+.1%}", f"<= +{MAX_RSS_GROWTH:.0%}",
        growth <= MAX_RSS_GROWTH)
    whole = f"one account of {a.scale_accounts * a.scale_account_messages} (migrate)"
    bcase = f"batch {a.scale_accounts} x {a.scale_account_messages} (--jobs {a.scale_jobs})"
    floor = f"login floor, {a.scale_accounts} accounts (not mailferry)"
    s = bench.median([b[floor][0].secs for b in batch])
    r = bench.median([b[floor][0].secs / b[whole][0].secs for b in batch])
    body.append((floor, "0", f"{s:.2f}", "-", "-", f"{r:.2f}x one account", "", ""))
    for case in (whole, bcase):
        s = bench.median([b[case][0].secs for b in batch])
        peak_rss = max(b[case][0].rss for b in batch)
        conns = max(max(b[case][1].values()) for b in batch)
        if case == whole:
            body.append((case, str(a.scale_accounts * a.scale_account_messages), f"{s:.2f}",
                         f"{a.scale_accounts * a.scale_account_messages / s:.0f}",
                         f"{peak_rss:.1f}", f"{conns} conn/host", "", ""))
            continue
        r = bench.median([b[bcase][0].secs / b[whole][0].secs for b in batch])
        above_floor = bench.median([b[bcase][0].secs / (b[whole][0].secs + b[floor][0].secs)
                                    for b in batch])
        body.append((case, str(a.scale_accounts * a.scale_account_messages), f"{s:.2f}",
                     f"{a.scale_accounts * a.scale_account_messages / s:.0f}",
                     f"{peak_rss:.1f}",
                     f"{r:.2f}x one account ({above_floor:.2f}x it + floor)",
                     f"<= {MAX_BATCH_RATIO}x",
                     "pass" if r <= MAX_BATCH_RATIO else "MISS"))
        body.append((f"  connections per host, {case}", "", "", "", "", f"peak {conns}",
                     f"<= {a.scale_max_connections}",
                     "pass" if conns <= a.scale_max_connections else "MISS"))
    widths = [max(len(r[k]) for r in [head] + body) for k in range(len(head))]
    print()
    print(f"mailferry scale: seed {a.seed}, {a.transport}, loopback, ~4 KB messages "
          f"({stats['bytes'] / 1e6:.0f} MB in the large mailbox, {stats['no-id']} without "
          f"Message-ID), {a.reps} rep(s), mail on {os.path.dirname(a.work)}")
    for k, r in enumerate([head] + body):
        print("  ".join(c.ljust(wd) if j in (0, 5, 6) else c.rjust(wd)
                        for j, (c, wd) in enumerate(zip(r, widths))))
        if k == 0:
            print("  ".join("-" * wd for wd in widths))
    print("seconds: median of the reps (no-op mirror: of each rep's median of "
          f"{NOOP_SAMPLES} runs); x baseline: median of the per-rep ratios to the pipelined "
          "upload\n(bench/baseline.py) of the same account's files; x copy: to the same "
          "client reading the account from the source server\n(as mailferry does); peak RSS: "
          "largest ru_maxrss over the reps; conn/host: the most established connections\nat one server at once, "
          "sampled every 20 ms at the server's port; login floor: a raw connect, LOGIN, SELECT "
          "and LOGOUT per\naccount on each server, --scale-jobs at once (not mailferry): "
          "what the servers charge per account, which no batch goes under; POP3 read floor: "
          "one raw\nsession's LIST, UIDL and TOP n 0 of every message, 1,024 in flight "
          "(not mailferry): what the source server\ncharges for the reads of a POP3 no-op, "
          "which no client that reads every header goes under.")


def main():
    if sys.argv[1:2] == ["users"]:
        ap = argparse.ArgumentParser(description="the users scale.py needs on one server")
        ap.add_argument("side", choices=("src", "dst"))
        ap.add_argument("--reps", type=int, required=True)
        add_scale_args(ap)
        a = ap.parse_args(sys.argv[2:])
        print(" ".join(users(a.side, a)))
        return 0
    ap = argparse.ArgumentParser(description="the timed part of bench/run.sh --scale")
    add_scale_args(ap)
    ap.add_argument("--count", type=int, help="ignored: the scale rows have their own counts")
    bench.add_server_args(ap)
    a = ap.parse_args()
    checks = bench.Checks()
    env = bench.case_env()
    limit = a.case_timeout
    t0 = time.monotonic()
    layout, stats = load(a, f"{a.src_dir}/mail")
    print(f"== scale corpus (seed {a.seed}): {a.scale_count} messages of ~4 KB "
          f"({stats['bytes'] / 1e6:.0f} MB, largest {stats['max']} bytes) in one folder, in "
          f"{a.scale_folders} folders and for POP3; the first {a.scale_noop_count} and "
          f"{a.scale_rss_count}; {a.scale_accounts} accounts x {a.scale_account_messages} and "
          f"those in one account; written in {time.monotonic() - t0:.1f} s", flush=True)
    if not prepare(a, env, limit, checks.fail, layout):
        return 1
    reps = [run_rep(a, rep, env, limit, checks.fail, layout) for rep in range(1, a.reps + 1)]
    print_table(a, stats, reps)
    return checks.verdict(
        "all checks passed: exit codes 0; reports: copied == N then 0, failed 0, verified "
        "(mirror: flags_updated 0, deleted 0); batch summary: every account ok;\non disk: "
        "every source message exactly once in its folder of every target, with its flags and "
        "internal date")


if __name__ == "__main__":
    sys.exit(main())
