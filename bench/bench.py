#!/usr/bin/env python3
"""bench.py — the timed part of bench/run.sh: corpus, load, doveadm import, mailferry, table.

bench/run.sh starts the two Dovecot servers and calls this with their directories and ports; it
is not meant to be run by hand (run.sh's header documents the knobs). Python 3 standard library
only.

Steps:
  1. generate --count messages from --seed straight into the source user's Maildir/new/
     (deterministic: the same count and seed give byte-identical messages);
  2. let the source Dovecot index them (`doveadm mailbox status`, untimed), so neither timed run
     pays for the first index build of a mailbox nobody has opened yet;
  3. `doveadm import` of the source Maildir into a fresh target user: the server's own floor
     (no network, no protocol, Dovecot's store reading Dovecot's store);
  4. `mailferry migrate` POP3S -> IMAPS into another fresh target user, then the same command
     again (a no-op re-run: must copy 0);
  5. check exit codes, the report and the number of files in the target Maildirs;
  steps 3-5 are repeated --reps times with fresh users; then the table of medians.
Exit status: 0 when every check passed, 1 when any FAIL line was printed.
"""
import argparse
import base64
import grp
import json
import os
import pwd
import random
import re
import shutil
import subprocess
import sys
import time
import unicodedata

# ----------------------------------------------------------------------------------------------
# Corpus generator. Shape (fractions of N, drawn from the seed):
#   ~80%   2-20 KB    text/plain or multipart/alternative (text + html)
#   ~15.5% 20-100 KB  long quoted threads, some with a small inline base64 image
#   ~4.5%  100 KB-2 MB multipart/mixed with 1-3 base64 attachments (random bytes)
#   ~2% without Message-ID; ~1% re-use an earlier message's Message-ID with different content
#   CRLF line ends only; Date spread over 2004-2025; some RFC 2047 subjects, folded To/References.
# The proportions follow the reference corpus in shared/research/bench-results.md, so MB/s here
# is comparable in kind with the numbers there. Text is assembled from a pool of seeded
# paragraphs (drawing every word per message would make generation, not the bench, the slow
# part at N=10000); each message still gets unique lines, headers and attachments.
# ----------------------------------------------------------------------------------------------

WORDS = ("account after agenda all also and answer april archive attached backup before below "
         "budget build call can change check client cluster could data date deadline deploy draft "
         "email every file final folder for from have help here invoice issue just know last let "
         "list mail mailbox meeting migration minutes month more move need next note now number "
         "office old one only other our patch plan please point quarter question quick release "
         "report review rollback schedule send server should some soon status team thanks that "
         "the their then there this thread time today update version want week what when which "
         "will with work would year you your").split()
FIRST = ["Alice", "Bruno", "Chloé", "Dmitri", "Eva", "Farid", "Grete", "Hiro", "Inès", "Jonas",
         "Kasia", "Luis", "Mei", "Noor", "Oskar", "Priya", "Rafael", "Søren", "Tomás", "Yuki"]
LAST = ["Andersen", "Bauer", "Costa", "Dubois", "Eriksson", "Fischer", "García", "Hansen",
        "Ivanova", "Jensen", "Kowalski", "Lefèvre", "Moreau", "Nakamura", "Okafor", "Petrov"]
DOMAINS = ["example.com", "example.org", "example.net", "corp.example", "lists.example.org"]
ENCODED_SUBJECTS = ["Réunion de lundi — ordre du jour", "Grüße aus Köln", "Отчёт за квартал",
                    "会議のお知らせ", "Smörgåsbord på fredag", "Facture n° 2021-117"]
ATTACHMENTS = [("application/pdf", "report-{}.pdf"), ("application/zip", "logs-{}.zip"),
               ("image/jpeg", "IMG_{}.jpg"), ("application/octet-stream", "dump-{}.bin")]
DATE_FROM = 1072915200  # 2004-01-01
DATE_TO = 1735689600    # 2025-01-01
DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def rfc2822_date(ts, tz_minutes):
    t = time.gmtime(ts + tz_minutes * 60)
    sign = "+" if tz_minutes >= 0 else "-"
    return (f"{DAYS[t.tm_wday]}, {t.tm_mday} {MONTHS[t.tm_mon - 1]} {t.tm_year} "
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} {sign}{abs(tz_minutes) // 60:02d}"
            f"{abs(tz_minutes) % 60:02d}")


def wrap(words, width=72):
    lines, line = [], ""
    for w in words:
        if line and len(line) + 1 + len(w) > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}" if line else w
    lines.append(line)
    return lines


def encoded_word(text):
    return "=?UTF-8?B?" + base64.b64encode(text.encode()).decode() + "?="


def fold(name, items, sep):
    """A header listing items, folded before 78 columns with CRLF + tab."""
    lines, line = [], f"{name}: "
    for k, item in enumerate(items):
        piece = item + (sep if k < len(items) - 1 else "")
        if len(line) + len(piece) > 76 and line != f"{name}: ":
            lines.append(line.rstrip())
            line = "\t"
        line += piece
    lines.append(line.rstrip())
    return "\r\n".join(lines)


def b64_block(data):
    enc = base64.b64encode(data).decode()
    return "\r\n".join(enc[i:i + 76] for i in range(0, len(enc), 76)) + "\r\n"


class Corpus:
    def __init__(self, seed):
        self.rng = random.Random(seed)
        # Paragraph pool: plain and quoted ("> ") variants, already wrapped and CRLF-joined.
        self.paras = []
        for k in range(1200):
            words = [self.rng.choice(WORDS) for _ in range(self.rng.randint(25, 110))]
            lines = wrap(words, 70 if k % 4 == 0 else 72)
            if k % 4 == 0:
                lines = ["> " + ln for ln in lines]
            self.paras.append("\r\n".join(lines) + "\r\n")
        self.ids = []

    def person(self):
        rng = self.rng
        first, last = rng.choice(FIRST), rng.choice(LAST)
        local = unicodedata.normalize("NFKD", f"{first}.{last}".lower())
        local = local.encode("ascii", "ignore").decode()  # Inès -> ines
        addr = f"{local}@{rng.choice(DOMAINS)}"
        name = f"{first} {last}"
        if not name.isascii():
            name = encoded_word(name)
        return f"{name} <{addr}>"

    def text(self, size, i):
        """About `size` bytes of text: a greeting unique to message i, then pooled paragraphs."""
        rng = self.rng
        out = [f"Hi {rng.choice(FIRST)},\r\n\r\nmessage {i}, ref {rng.getrandbits(48):012x}.\r\n"]
        n = len(out[0])
        while n < size:
            p = rng.choice(self.paras)
            out.append("\r\n" + p)
            n += len(p) + 2
        out.append("\r\n-- \r\nsent from the bench corpus\r\n")
        return "".join(out)

    def headers(self, i, ts, mid, content_type):
        rng = self.rng
        h = []
        for hop in range(rng.randint(1, 3)):
            h.append(f"Received: from mx{hop}.{rng.choice(DOMAINS)} (mx{hop}.example "
                     f"[192.0.2.{rng.randint(1, 254)}])\r\n\tby mail.example.net with ESMTPS id "
                     f"{rng.getrandbits(40):010X};\r\n\t{rfc2822_date(ts + 20 * (3 - hop), 0)}")
        h.append(f"From: {self.person()}")
        h.append(fold("To", [self.person() for _ in range(rng.choice([1, 1, 1, 2, 4, 9]))], ", "))
        if rng.random() < 0.25:
            h.append(fold("Cc", [self.person() for _ in range(rng.randint(1, 5))], ", "))
        if rng.random() < 0.12:
            h.append("Subject: " + encoded_word(rng.choice(ENCODED_SUBJECTS)))
        else:
            words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 9)))
            h.append(f"Subject: {'Re: ' if rng.random() < 0.3 else ''}{words.capitalize()}")
        h.append("Date: " + rfc2822_date(ts, rng.choice([0, 60, 120, -300, -480, 330, 540])))
        if mid is not None:
            h.append(f"Message-ID: {mid}")
        if rng.random() < 0.3:
            refs = [f"<{rng.getrandbits(56):014x}@{rng.choice(DOMAINS)}>"
                    for _ in range(rng.randint(1, 8))]
            h.append(f"In-Reply-To: {refs[-1]}")
            h.append(fold("References", refs, " "))
        h.append("MIME-Version: 1.0")
        h.append(content_type)
        return "\r\n".join(h) + "\r\n\r\n"

    def message(self, i):
        """Returns (bytes, kind, delivery time) for message number i (1-based)."""
        rng = self.rng
        r = rng.random()
        kind = "small" if r < 0.80 else "medium" if r < 0.955 else "large"
        ts = rng.randint(DATE_FROM, DATE_TO)
        r = rng.random()
        if r < 0.02:
            mid = None
            kind += "+no-id"
        elif r < 0.03 and self.ids:
            mid = rng.choice(self.ids)  # same identity, different content: both must arrive
            kind += "+dup-id"
        else:
            mid = f"<{ts}.{rng.getrandbits(40):010x}.{i}@{rng.choice(DOMAINS)}>"
            self.ids.append(mid)
        b = f"=_bench_{rng.getrandbits(64):016x}"
        if not kind.startswith("large"):
            small = kind.startswith("small")
            size = rng.randint(2_000, 20_000) if small else rng.randint(20_000, 100_000)
            if rng.random() < 0.5:
                text = self.text(size * 2 // 5, i)
                paras = text.replace("<", "&lt;").split("\r\n\r\n")
                html = ("<html><body>\r\n" + "".join(f"<p>{p}</p>\r\n" for p in paras)
                        + "</body></html>\r\n")
                ct = f'Content-Type: multipart/alternative;\r\n\tboundary="{b}"'
                body = (f"This is a multi-part message in MIME format.\r\n\r\n--{b}\r\n"
                        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
                        f"{text}\r\n--{b}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
                        f"{html}\r\n--{b}--\r\n")
                if kind.startswith("medium") and rng.random() < 0.5:
                    b2 = f"=_bench_{rng.getrandbits(64):016x}"
                    img = rng.randbytes(max(1000, size - len(body)) * 3 // 4)
                    body = (f"--{b2}\r\n{ct}\r\n\r\n{body}\r\n--{b2}\r\nContent-Type: image/png\r\n"
                            f"Content-ID: <img{i}@bench>\r\n"
                            "Content-Transfer-Encoding: base64\r\n\r\n"
                            f"{b64_block(img)}--{b2}--\r\n")
                    ct = f'Content-Type: multipart/related;\r\n\tboundary="{b2}"'
            else:
                ct = "Content-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit"
                body = self.text(size, i)
        else:
            size = rng.randint(100_000, 2_000_000)
            parts = [f"--{b}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
                     f"{self.text(rng.randint(300, 3000), i)}"]
            natt = rng.randint(1, 3)
            left = size
            for k in range(natt):
                share = left if k == natt - 1 else rng.randint(left // 4, left // 2)
                left -= share
                mime, name = rng.choice(ATTACHMENTS)
                name = name.format(f"{i}-{k}")
                parts.append(f"--{b}\r\nContent-Type: {mime}; name=\"{name}\"\r\n"
                             f"Content-Disposition: attachment; filename=\"{name}\"\r\n"
                             f"Content-Transfer-Encoding: base64\r\n\r\n"
                             f"{b64_block(rng.randbytes(max(512, share * 3 // 4)))}")
            ct = f'Content-Type: multipart/mixed;\r\n\tboundary="{b}"'
            body = "\r\n".join(parts) + f"\r\n--{b}--\r\n"
        raw = (self.headers(i, ts, mid, ct) + body).encode()
        return raw, kind, ts + rng.randint(5, 600)


def load_maildir(maildir, count, seed):
    """Writes the corpus as Dovecot would have delivered it: one file per message in new/, named
    TIME.M<n>.bench,S=<size>,W=<size> (S = bytes on disk, W = size with CRLF line ends: equal
    here, all lines are CRLF). With S/W in the name Dovecot need not read every file to answer
    POP3 LIST, as for mail it delivered itself. mtime = delivery time (Dovecot's INTERNALDATE
    for Maildir). Owned by nobody:nogroup, the mail processes' user in dovecot.sh.
    This beats `doveadm save` (one process per message) by far; see run.sh's header."""
    uid, gid = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
    for sub in ("", "/cur", "/new", "/tmp"):
        os.makedirs(maildir + sub, exist_ok=True)
        os.chown(maildir + sub, uid, gid)
    os.chown(os.path.dirname(maildir), uid, gid)
    corpus = Corpus(seed)
    stats = {"count": count, "bytes": 0, "small": 0, "medium": 0, "large": 0, "no-id": 0,
             "dup-id": 0, "max": 0}
    for i in range(1, count + 1):
        raw, kind, delivered = corpus.message(i)
        assert b"\n" not in raw.replace(b"\r\n", b""), "bare LF generated"
        path = f"{maildir}/new/{delivered}.M{i}.bench,S={len(raw)},W={len(raw)}"
        with open(path, "wb") as f:
            f.write(raw)
        os.chown(path, uid, gid)
        os.utime(path, (delivered, delivered))
        stats["bytes"] += len(raw)
        stats["max"] = max(stats["max"], len(raw))
        for part in kind.split("+"):
            stats[part] += 1
    return stats


# ----------------------------------------------------------------------------------------------
# Timed runs
# ----------------------------------------------------------------------------------------------

def timed(argv, env, log, timeout):
    """Runs argv under bench/measure.py (see there why not straight from here), bounded by
    `timeout` seconds. Returns (exit code or -signal, wall seconds, peak RSS in MiB, CPU
    seconds)."""
    measure = os.path.join(os.path.dirname(os.path.abspath(__file__)), "measure.py")
    argv = [shutil.which(argv[0], path=env["PATH"]) or argv[0], *argv[1:]]
    out = subprocess.run([sys.executable, "-I", "-S", measure, str(timeout), log, "--", *argv],
                         env=env, capture_output=True, text=True, timeout=timeout + 30)
    if out.returncode != 0:
        raise RuntimeError(f"measure.py failed: {out.stderr.strip()}")
    r = json.loads(out.stdout)
    if r["timed_out"]:
        print(f"FAIL: {os.path.basename(argv[0])} still running after {timeout} s; killed it",
              file=sys.stderr)
    return r["rc"], r["seconds"], r["maxrss_kib"] / 1024, r["cpu_seconds"]


def server_cpu(dovecot_dir):
    """CPU seconds a Dovecot instance has used so far: its master plus its live children, each
    with the time of the children it has already reaped (a finished imap or pop3 session's CPU
    lands in the master's cutime/cstime). Read from /proc, before and after a run."""
    tick = os.sysconf("SC_CLK_TCK")

    def times(pid):
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return sum(int(x) for x in fields[11:15]) / tick  # utime stime cutime cstime

    with open(f"{dovecot_dir}/dovecot.pid") as f:
        master = f.read().strip()
    total = times(master)
    try:
        with open(f"/proc/{master}/task/{master}/children") as f:
            children = f.read().split()
    except OSError:
        children = []
    for child in children:
        try:
            total += times(child)
        except (OSError, IndexError):
            pass  # exited meanwhile: its time is now in the master's cutime, or just missed
    return total


def count_files(maildir):
    """Messages in a Maildir's INBOX: files in cur/ and new/ (cheap, no IMAP)."""
    n = 0
    for sub in ("cur", "new"):
        try:
            n += len(os.listdir(os.path.join(maildir, sub)))
        except FileNotFoundError:
            pass
    return n


def tail(path, lines=15):
    try:
        with open(path, "rb") as f:
            return b"\n".join(f.read().splitlines()[-lines:]).decode(errors="replace")
    except OSError as e:
        return str(e)


def run_rep(a, rep, src_maildir, corpus_bytes, env, limit, fail):
    """One repetition: doveadm import into viaimport<rep>, mailferry twice into viaferry<rep>.
    Returns {case: (seconds, bytes moved, peak RSS MiB, CPU seconds, servers' CPU seconds)};
    each failed check goes to fail()."""
    out = {}
    import_user, ferry_user = f"{a.import_user}{rep}", f"{a.ferry_user}{rep}"

    # The floor: Dovecot copying its own store. INDEX=MEMORY keeps doveadm from writing index
    # files next to the source's (it reads the same Maildir the source server serves); "" as the
    # destination parent keeps the folder names (INBOX -> INBOX); -s subscribes them.
    log = f"{a.work}/doveadm-import-{rep}.log"
    rc, secs, rss, cpu = timed(["doveadm", "-c", f"{a.dst_dir}/dovecot.conf", "import", "-u",
                                import_user, "-s", f"maildir:{src_maildir}:INDEX=MEMORY", "",
                                "all"], env, log, limit)
    out["doveadm import"] = (secs, corpus_bytes, rss, cpu, None)
    if rc != 0:
        fail(f"rep {rep}: doveadm import exited {rc}; tail of its log:\n{tail(log)}")
    got = count_files(f"{a.dst_dir}/mail/{import_user}/Maildir")
    if got != a.count:
        fail(f"rep {rep}: doveadm import: target Maildir holds {got} messages, not {a.count}")

    ferry_env = dict(env, MAILFERRY_FROM_PASSWORD=a.password, MAILFERRY_TO_PASSWORD=a.password)
    for case, expect_copied in (("mailferry copy", a.count), ("mailferry no-op re-run", 0)):
        tag = case.split()[-1]
        report = f"{a.work}/report-{tag}-{rep}.json"
        log = f"{a.work}/mailferry-{tag}-{rep}.log"
        argv = [a.mailferry, "migrate",
                "--from", f"pop3s://{a.src_user}@127.0.0.1:{a.pop3s_port}",
                "--to", f"imaps://{ferry_user}@127.0.0.1:{a.imaps_port}/INBOX",
                "--tls-ca", a.ca, "--report", report, "--quiet"]
        if a.connections:
            argv += ["--connections", str(a.connections)]
        before = server_cpu(a.src_dir), server_cpu(a.dst_dir)
        rc, secs, rss, cpu = timed(argv, ferry_env, log, limit)
        time.sleep(0.3)  # untimed: lets the servers' session processes exit and be reaped
        servers = [server_cpu(d) - b for d, b in zip((a.src_dir, a.dst_dir), before)]
        try:
            with open(report) as f:
                rep_json = json.load(f)
        except (OSError, ValueError) as e:
            rep_json = {}
            fail(f"rep {rep}: {case}: no readable report: {e}")
        out[case] = (secs, rep_json.get("bytes_copied") or 0, rss, cpu, servers)
        if rc != 0:
            fail(f"rep {rep}: {case}: mailferry exited {rc}; tail of its log:\n{tail(log)}")
        if rep_json:
            want = {"source_messages": a.count, "copied": expect_copied,
                    "already_present": a.count - expect_copied, "failed": 0, "verified": True}
            for key, value in want.items():
                if rep_json.get(key) != value:
                    fail(f"rep {rep}: {case}: report says {key}={rep_json.get(key)!r}, "
                         f"expected {value!r}")
            if expect_copied and rep_json.get("bytes_copied") != corpus_bytes:
                print(f"   note: bytes_copied={rep_json.get('bytes_copied')}, the corpus has "
                      f"{corpus_bytes} bytes", flush=True)
        got = count_files(f"{a.dst_dir}/mail/{ferry_user}/Maildir")
        if got != a.count:
            fail(f"rep {rep}: {case}: target Maildir holds {got} messages, not {a.count}")
    # Where the time goes, per case: CPU seconds of the measured process itself and, for
    # mailferry, of the source and target Dovecot during its run. On 2 cores, a client CPU far
    # below the wall time means it waits for the servers.
    for case, v in out.items():
        servers = f", source server {v[4][0]:.2f}, target server {v[4][1]:.2f}" if v[4] else ""
        print(f"   rep {rep}: {case:<22} {v[0]:6.2f} s wall; CPU s: own {v[3]:.2f}{servers}",
              flush=True)
    # This rep's users are done with: free the tmpfs (3 copies of the corpus per rep otherwise).
    for user in (import_user, ferry_user):
        shutil.rmtree(f"{a.dst_dir}/mail/{user}", ignore_errors=True)
    return out


def median(xs):
    xs = sorted(xs)
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


def main():
    ap = argparse.ArgumentParser(description="the timed part of bench/run.sh")
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--reps", type=int, required=True)
    ap.add_argument("--src-dir", required=True, help="source Dovecot's dovecot.sh DIR")
    ap.add_argument("--dst-dir", required=True, help="target Dovecot's dovecot.sh DIR")
    ap.add_argument("--src-user", required=True)
    ap.add_argument("--import-user", required=True, help="prefix; rep k uses PREFIXk")
    ap.add_argument("--ferry-user", required=True, help="prefix; rep k uses PREFIXk")
    ap.add_argument("--password", required=True, help="every bench user's password")
    ap.add_argument("--pop3s-port", type=int, required=True)
    ap.add_argument("--imaps-port", type=int, required=True)
    ap.add_argument("--ca", required=True, help="both servers' certificates, concatenated")
    ap.add_argument("--mailferry", required=True)
    ap.add_argument("--connections", type=int, help="passed to mailferry when given")
    ap.add_argument("--work", required=True, help="directory for logs and reports")
    a = ap.parse_args()
    failures = []

    def fail(msg):
        failures.append(msg)
        print(f"FAIL: {msg}", file=sys.stderr, flush=True)

    # Generous bounds: the slowest plausible run (a few MB/s) still fits; a hang does not.
    limit = 120 + a.count // 20
    src_maildir = f"{a.src_dir}/mail/{a.src_user}/Maildir"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root")}

    t0 = time.monotonic()
    st = load_maildir(src_maildir, a.count, a.seed)
    mb = st["bytes"] / 1e6
    print(f"== corpus (seed {a.seed}): {a.count} messages, {mb:.1f} MB (largest "
          f"{st['max'] / 1e6:.2f} MB): {st['small']} small, {st['medium']} medium, {st['large']} "
          f"large; {st['no-id']} without Message-ID, {st['dup-id']} re-using one; written into "
          f"the maildrop in {time.monotonic() - t0:.1f} s", flush=True)

    # Untimed: the source Dovecot scans new/ and writes its uidlist and index now, as it would
    # have at delivery; also proves it sees every message before anything is timed.
    out = subprocess.run(["doveadm", "-c", f"{a.src_dir}/dovecot.conf", "-f", "flow", "mailbox",
                          "status", "-u", a.src_user, "messages", "INBOX"],
                         env=env, capture_output=True, text=True, timeout=limit)
    seen = re.search(r"messages=(\d+)", out.stdout)
    seen = seen.group(1) if seen else None
    if out.returncode != 0 or seen != str(a.count):
        fail(f"source Dovecot sees {seen or '?'} messages, expected {a.count}: "
             f"{out.stderr.strip()}")
        return 1

    # Repetitions interleave the three cases, so a burst of load from elsewhere on the machine
    # hits one rep of each rather than every rep of one case.
    print(f"== {a.reps} rep(s) of: doveadm import, mailferry copy, mailferry no-op re-run",
          flush=True)
    reps = [run_rep(a, rep, src_maildir, st["bytes"], env, limit, fail)
            for rep in range(1, a.reps + 1)]

    # ---- the table ----
    # What measure.py reports for a program that uses no memory: a peak at this floor means
    # "this much or less".
    floor = min(timed(["true"], env, f"{a.work}/true.log", 10)[2] for _ in range(3))
    head = ("case", "messages", "seconds", "msg/s", "MB/s", "peak RSS MiB", "x doveadm import")
    body = []
    for case in reps[0]:
        secs = median([r[case][0] for r in reps])
        nbytes = median([r[case][1] for r in reps])
        rss = max(r[case][2] for r in reps)
        ratio = median([r[case][0] / r["doveadm import"][0] for r in reps])
        body.append((case, str(a.count), f"{secs:.2f}", f"{a.count / secs:.0f}",
                     f"{nbytes / 1e6 / secs:.1f}" if nbytes else "-",
                     f"{rss:.1f}" if rss > floor + 0.2 else f"<={floor:.1f}", f"{ratio:.2f}"))
    widths = [max(len(r[k]) for r in [head] + body) for k in range(len(head))]
    print()
    print(f"mailferry bench: N={a.count}, seed {a.seed}, {mb:.1f} MB, POP3S -> IMAPS on 127.0.0.1, "
          f"{a.reps} rep(s){', --connections ' + str(a.connections) if a.connections else ''}, "
          f"mail on {os.path.dirname(a.work)}")
    for k, r in enumerate([head] + body):
        cells = [c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))]
        print("  ".join(cells))
        if k == 0:
            print("  ".join("-" * w for w in widths))
    print(f"seconds: median of the reps; msg/s and MB/s from it (MB/s: bytes moved, the corpus "
          f"for doveadm import,\nthe report's bytes_copied for mailferry); x doveadm import: "
          f"median of the per-rep ratios;\npeak RSS: largest ru_maxrss of the process over the "
          f"reps, measured with a floor of {floor:.1f} MiB.")
    if failures:
        print(f"\nFAIL: {len(failures)} check(s) failed:", file=sys.stderr)
        for msg in failures:
            print(f"FAIL: {msg.splitlines()[0]}", file=sys.stderr)
        return 1
    print("\nall checks passed: exit codes 0, report copied == N then 0 (failed 0, verified), "
          "each target Maildir holds N messages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
