#!/usr/bin/env python3
"""bench.py — the timed part of bench/run.sh: corpus, load, doveadm import, mailferry, table.

bench/run.sh starts the two Dovecot servers and calls this with their directories and ports; it
is not meant to be run by hand (run.sh's header documents the knobs). Python 3 standard library
only.

Steps:
  1. generate --count messages from --seed (deterministic: the same count and seed give
     byte-identical messages) and write each one twice on the source server: into the POP3
     user's Maildir/new/, and into the IMAP user's Maildir, spread over six folders (INBOX,
     Archive, Archive/2019, Sent, Lists/dev, Données) with flags (see FOLDERS and FLAGS);
  2. let the source Dovecot index both accounts (`doveadm mailbox status`, untimed), so no timed
     run pays for the first index build of a mailbox nobody has opened yet, and check that it
     sees every message in every folder; then one untimed `mailferry migrate --dry-run` of the
     IMAP account, which fills the source's cache with the fields mailferry asks for (a server
     in use has them from its users' mail clients);
  3. POP3 source: `doveadm import` of the POP3 Maildir into a fresh target user (the server's
     own floor: no network, no protocol, Dovecot's store reading Dovecot's store), then
     `mailferry migrate` POP3S -> IMAPS into another fresh target user, then the same command
     again (a no-op re-run: must copy 0);
  4. IMAP source: the same three for the IMAP account (`doveadm import` of every folder,
     `mailferry migrate` IMAPS -> IMAPS, and again);
  5. mirror: `mailferry mirror` with a fresh --state into another fresh user (the first run, a
     full copy), then the same command --noop-samples times with nothing changed: each must copy
     0 and update 0 flags;
  6. check exit codes, the reports and, on disk, the target Maildirs: N files for POP3; for the
     IMAP source, per folder the same number of files, the same flags (\\Seen, \\Answered,
     \\Flagged from the Maildir file names) and the same internal dates (file mtimes) as the
     source;
  steps 3-6 are repeated --reps times with fresh users; then the table of medians.
Exit status: 0 when every check passed, 1 when any FAIL line was printed.
"""
import argparse
import base64
import grp
import json
import os
import pwd
import random
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


# ----------------------------------------------------------------------------------------------
# The IMAP account: the same messages, spread over folders, with flags.
# ----------------------------------------------------------------------------------------------

# (folder name with "/" as separator, share of N), drawn per message from a generator seeded
# apart from the corpus's, so the messages stay byte-identical to the POP3 account's.
FOLDERS = [("INBOX", 0.55), ("Archive", 0.15), ("Archive/2019", 0.08), ("Sent", 0.10),
           ("Lists/dev", 0.09), ("Données", 0.03)]
# Each drawn independently per message: (IMAP flag, Maildir info letter, share).
FLAGS = [("\\Seen", "S", 0.70), ("\\Answered", "R", 0.10), ("\\Flagged", "F", 0.05)]


def mutf7(name):
    """IMAP's modified UTF-7 (RFC 3501 5.1.3), as Dovecot names Maildir++ folder directories."""
    out, run = [], []

    def flush():
        if run:
            b = base64.b64encode("".join(run).encode("utf-16-be")).decode().rstrip("=")
            out.append("&" + b.replace("/", ",") + "-")
            run.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            run.append(ch)
    flush()
    return "".join(out)


assert mutf7("Données") == "Donn&AOk-es"


def folder_dir(maildir, folder):
    """Maildir++: INBOX is the Maildir itself, folder A/B is MAILDIR/.A.B (names in modified
    UTF-7). Dovecot 2.3.19 lists such a directory as a folder as soon as it exists with cur/,
    new/ and tmp/: no `maildirfolder` file and no subscription are needed (checked with
    `doveadm mailbox list`); a parent without a directory of its own (Lists, for Lists/dev) is
    listed as a non-selectable parent."""
    if folder == "INBOX":
        return maildir
    return f"{maildir}/.{mutf7(folder).replace('/', '.')}"


def make_maildir(path, uid, gid):
    for sub in ("", "/cur", "/new", "/tmp"):
        os.makedirs(path + sub, exist_ok=True)
        os.chown(path + sub, uid, gid)


def load_corpus(pop_maildir, imap_maildir, count, seed):
    """Writes the corpus as Dovecot would have delivered it, into two accounts:
      - the POP3 user's INBOX: one file per message in new/, named
        TIME.M<n>.bench,S=<size>,W=<size> (S = bytes on disk, W = size with CRLF line ends:
        equal here, all lines are CRLF). With S/W in the name Dovecot need not read every file
        to answer POP3 LIST, as for mail it delivered itself;
      - the IMAP user's folders (FOLDERS): the same file, hard-linked (the bytes are identical
        and Maildir never rewrites a message in place), as cur/NAME:2,<flags> with the FLAGS
        letters in Maildir order, as mail a client has already seen.
    mtime = delivery time (Dovecot's INTERNALDATE for Maildir). Owned by nobody:nogroup, the
    mail processes' user in dovecot.sh. This beats `doveadm save` (one process per message) by
    far; see run.sh's header. Returns the corpus statistics and {folder: messages}."""
    uid, gid = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
    make_maildir(pop_maildir, uid, gid)
    os.chown(os.path.dirname(pop_maildir), uid, gid)
    for folder, _ in FOLDERS:
        make_maildir(folder_dir(imap_maildir, folder), uid, gid)
    os.chown(os.path.dirname(imap_maildir), uid, gid)
    corpus = Corpus(seed)
    layout = random.Random(f"folders-{seed}")
    names, weights = [f for f, _ in FOLDERS], [w for _, w in FOLDERS]
    stats = {"count": count, "bytes": 0, "small": 0, "medium": 0, "large": 0, "no-id": 0,
             "dup-id": 0, "max": 0}
    per_folder = {f: 0 for f in names}
    for i in range(1, count + 1):
        raw, kind, delivered = corpus.message(i)
        assert b"\n" not in raw.replace(b"\r\n", b""), "bare LF generated"
        name = f"{delivered}.M{i}.bench,S={len(raw)},W={len(raw)}"
        path = f"{pop_maildir}/new/{name}"
        with open(path, "wb") as f:
            f.write(raw)
        os.chown(path, uid, gid)
        os.utime(path, (delivered, delivered))
        folder = layout.choices(names, weights)[0]
        letters = "".join(sorted(letter for _, letter, p in FLAGS if layout.random() < p))
        os.link(path, f"{folder_dir(imap_maildir, folder)}/cur/{name}:2,{letters}")
        per_folder[folder] += 1
        stats["bytes"] += len(raw)
        stats["max"] = max(stats["max"], len(raw))
        for part in kind.split("+"):
            stats[part] += 1
    return stats, per_folder


def maildir_tree(maildir):
    """What a Maildir++ holds, from the file system alone: {folder directory ("" for INBOX):
    {"messages": n, "S"/"R"/"F": messages with that flag letter, "dates": sorted mtimes}} for
    every folder with at least one message."""
    tree = {}
    try:
        dirs = [""] + sorted(d for d in os.listdir(maildir)
                             if d.startswith(".") and os.path.isdir(f"{maildir}/{d}/cur"))
    except FileNotFoundError:
        return tree
    for d in dirs:
        entry = {"messages": 0, "dates": []}
        entry.update({letter: 0 for _, letter, _ in FLAGS})
        for sub in ("cur", "new"):
            base = f"{maildir}/{d}/{sub}" if d else f"{maildir}/{sub}"
            try:
                files = os.listdir(base)
            except FileNotFoundError:
                continue
            for name in files:
                entry["messages"] += 1
                entry["dates"].append(int(os.stat(f"{base}/{name}").st_mtime))
                info = name.rsplit(":2,", 1)[1] if ":2," in name else ""
                for _, letter, _ in FLAGS:
                    entry[letter] += letter in info
        entry["dates"].sort()
        if entry["messages"]:
            tree[d or "INBOX"] = entry
    return tree


def compare_trees(want, got):
    """Differences between two maildir_tree()s, as (kind, text): kind is "messages", "flags"
    or "dates"."""
    out = []
    for d in sorted(set(want) | set(got)):
        w, g = want.get(d), got.get(d)
        if not w or not g:
            out.append(("messages", f"folder {d}: {w and w['messages'] or 0} messages on the "
                                    f"source, {g and g['messages'] or 0} on the target"))
            continue
        if w["messages"] != g["messages"]:
            out.append(("messages", f"folder {d}: {w['messages']} messages on the source, "
                                    f"{g['messages']} on the target"))
        for flag, letter, _ in FLAGS:
            if w[letter] != g[letter]:
                out.append(("flags", f"folder {d}: {w[letter]} messages with {flag} on the "
                                     f"source, {g[letter]} on the target"))
        if w["messages"] == g["messages"] and w["dates"] != g["dates"]:
            off = sum(x != y for x, y in zip(w["dates"], g["dates"]))
            out.append(("dates", f"folder {d}: {off} internal dates (file mtimes) differ"))
    return out


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


# The table's rows, in order, each with the doveadm import its "x doveadm import" column
# divides by: the one that copied the same account.
CASES = [("doveadm import", "doveadm import"),
         ("mailferry copy", "doveadm import"),
         ("mailferry no-op re-run", "doveadm import"),
         ("doveadm import folders", "doveadm import folders"),
         ("mailferry imap copy", "doveadm import folders"),
         ("mailferry imap no-op re-run", "doveadm import folders"),
         ("mailferry mirror first run", "doveadm import folders"),
         ("mailferry mirror no-op", "doveadm import folders")]


def run_doveadm_import(a, user, src_maildir, env, limit, log):
    """doveadm import of a whole Maildir into a fresh target user. INDEX=MEMORY keeps doveadm
    from writing index files next to the source's (it reads the same Maildir the source server
    serves); "" as the destination parent keeps the folder names (INBOX -> INBOX, Archive/2019
    -> Archive/2019); -s subscribes them. Returns (exit code, the row's tuple)."""
    rc, secs, rss, cpu = timed(["doveadm", "-c", f"{a.dst_dir}/dovecot.conf", "import", "-u",
                                user, "-s", f"maildir:{src_maildir}:INDEX=MEMORY", "", "all"],
                               env, log, limit)
    return rc, (secs, None, rss, cpu, None)


def run_mailferry(a, case, argv, want, report, log, env, limit, fail, rep):
    """One timed mailferry run; checks its exit code and that its report has the `want`
    values. Returns (seconds, bytes copied, peak RSS MiB, CPU seconds, [source server CPU,
    target server CPU]) and the report."""
    if a.connections:
        argv = argv + ["--connections", str(a.connections)]
    before = server_cpu(a.src_dir), server_cpu(a.dst_dir)
    rc, secs, rss, cpu = timed(argv, env, log, limit)
    time.sleep(0.3)  # untimed: lets the servers' session processes exit and be reaped
    servers = [server_cpu(d) - b for d, b in zip((a.src_dir, a.dst_dir), before)]
    try:
        with open(report) as f:
            rep_json = json.load(f)
    except (OSError, ValueError) as e:
        rep_json = {}
        fail(f"rep {rep}: {case}: no readable report: {e}")
    if rc != 0:
        fail(f"rep {rep}: {case}: mailferry exited {rc}; tail of its log:\n{tail(log)}")
    if rep_json:
        for key, value in want.items():
            if rep_json.get(key) != value:
                fail(f"rep {rep}: {case}: report says {key}={rep_json.get(key)!r}, "
                     f"expected {value!r}")
    return (secs, rep_json.get("bytes_copied") or 0, rss, cpu, servers), rep_json


def check_tree(case, rep, want_tree, maildir, fail, strict=True):
    """Compares a target Maildir with the source account's folders on disk. With strict, any
    difference fails; otherwise (doveadm import, the reference) a difference in flags or dates
    is only noted, a difference in messages still fails."""
    for kind, text in compare_trees(want_tree, maildir_tree(maildir))[:8]:
        if strict or kind == "messages":
            fail(f"rep {rep}: {case}: {text}")
        else:
            print(f"   note: rep {rep}: {case}: {text}", flush=True)


def run_rep(a, rep, corpus_bytes, imap_tree, env, limit, fail):
    """One repetition of every case in CASES, each into fresh target users (<prefix><rep>).
    Returns {case: (seconds, bytes moved, peak RSS MiB, CPU seconds, servers' CPU seconds)};
    each failed check goes to fail()."""
    out = {}
    dst_mail = f"{a.dst_dir}/mail"
    pop_maildir = f"{a.src_dir}/mail/{a.src_user}/Maildir"
    imap_maildir = f"{a.src_dir}/mail/{a.imap_user}/Maildir"
    ferry_env = dict(env, MAILFERRY_FROM_PASSWORD=a.password, MAILFERRY_TO_PASSWORD=a.password)
    tls = ["--tls-ca", a.ca, "--quiet"]
    pop_from = f"pop3s://{a.src_user}@127.0.0.1:{a.pop3s_port}"
    imap_from = f"imaps://{a.imap_user}@127.0.0.1:{a.src_imaps_port}"

    def to(user, folder=""):
        return f"imaps://{user}{rep}@127.0.0.1:{a.imaps_port}{folder}"

    def files(tag):
        return f"{a.work}/report-{tag}-{rep}.json", f"{a.work}/{tag}-{rep}.log"

    # ---- POP3 source -> INBOX ----
    user = f"viaimport{rep}"
    rc, out["doveadm import"] = run_doveadm_import(a, user, pop_maildir, env, limit,
                                                   files("doveadm-import")[1])
    if rc != 0:
        fail(f"rep {rep}: doveadm import exited {rc}; tail of its log:\n"
             f"{tail(files('doveadm-import')[1])}")
    got = count_files(f"{dst_mail}/{user}/Maildir")
    if got != a.count:
        fail(f"rep {rep}: doveadm import: target Maildir holds {got} messages, not {a.count}")
    shutil.rmtree(f"{dst_mail}/{user}", ignore_errors=True)  # frees the tmpfs as we go

    for case, tag, copied in (("mailferry copy", "copy", a.count),
                              ("mailferry no-op re-run", "noop", 0)):
        report, log = files(f"pop-{tag}")
        argv = [a.mailferry, "migrate", "--from", pop_from, "--to", to("viaferry", "/INBOX"),
                "--report", report, *tls]
        want = {"source_messages": a.count, "copied": copied, "already_present": a.count - copied,
                "failed": 0, "verified": True}
        out[case], rep_json = run_mailferry(a, case, argv, want, report, log, ferry_env, limit,
                                            fail, rep)
        if copied and rep_json.get("bytes_copied") not in (None, corpus_bytes):
            print(f"   note: bytes_copied={rep_json.get('bytes_copied')}, the corpus has "
                  f"{corpus_bytes} bytes", flush=True)
        got = count_files(f"{dst_mail}/viaferry{rep}/Maildir")
        if got != a.count:
            fail(f"rep {rep}: {case}: target Maildir holds {got} messages, not {a.count}")
    shutil.rmtree(f"{dst_mail}/viaferry{rep}", ignore_errors=True)

    # ---- IMAP source, every folder ----
    user = f"foldimport{rep}"
    log = files("doveadm-import-folders")[1]
    rc, out["doveadm import folders"] = run_doveadm_import(a, user, imap_maildir, env, limit, log)
    if rc != 0:
        fail(f"rep {rep}: doveadm import folders exited {rc}; tail of its log:\n{tail(log)}")
    check_tree("doveadm import folders", rep, imap_tree, f"{dst_mail}/{user}/Maildir", fail,
               strict=False)
    shutil.rmtree(f"{dst_mail}/{user}", ignore_errors=True)

    for case, tag, copied in (("mailferry imap copy", "copy", a.count),
                              ("mailferry imap no-op re-run", "noop", 0)):
        report, log = files(f"imap-{tag}")
        argv = [a.mailferry, "migrate", "--from", imap_from, "--to", to("viaimap"),
                "--report", report, *tls]
        want = {"source_messages": a.count, "copied": copied, "already_present": a.count - copied,
                "failed": 0, "verified": True}
        out[case], _ = run_mailferry(a, case, argv, want, report, log, ferry_env, limit, fail, rep)
        check_tree(case, rep, imap_tree, f"{dst_mail}/viaimap{rep}/Maildir", fail)
    shutil.rmtree(f"{dst_mail}/viaimap{rep}", ignore_errors=True)

    # ---- mirror: a first run with fresh state (a full copy), then runs with nothing changed.
    state = f"{a.work}/mirror-state-{rep}"
    samples = []
    for k in range(a.noop_samples + 1):
        case = "mailferry mirror first run" if k == 0 else "mailferry mirror no-op"
        report, log = files(f"mirror-{k}")
        argv = [a.mailferry, "mirror", "--from", imap_from, "--to", to("viamirror"),
                "--state", state, "--report", report, *tls]
        copied = a.count if k == 0 else 0
        want = {"source_messages": a.count, "copied": copied, "already_present": a.count - copied,
                "flags_updated": 0, "deleted": 0, "failed": 0, "verified": True}
        row, _ = run_mailferry(a, case, argv, want, report, log, ferry_env, limit, fail, rep)
        if k == 0:
            out[case] = row
            check_tree(case, rep, imap_tree, f"{dst_mail}/viamirror{rep}/Maildir", fail)
        else:
            samples.append(row)
    # The no-op is short and so noisy: the row is the median of the samples.
    samples.sort(key=lambda r: r[0])
    out["mailferry mirror no-op"] = samples[len(samples) // 2]
    check_tree("mailferry mirror no-op", rep, imap_tree, f"{dst_mail}/viamirror{rep}/Maildir",
               fail)
    shutil.rmtree(f"{dst_mail}/viamirror{rep}", ignore_errors=True)
    shutil.rmtree(state, ignore_errors=True)

    # Where the time goes, per case: CPU seconds of the measured process itself and, for
    # mailferry, of the source and target Dovecot during its run. On 2 cores, a client CPU far
    # below the wall time means it waits for the servers.
    for case, v in out.items():
        servers = f", source server {v[4][0]:.2f}, target server {v[4][1]:.2f}" if v[4] else ""
        extra = ""
        if case == "mailferry mirror no-op":
            extra = f" (median of {', '.join(f'{r[0]:.3f}' for r in samples)})"
        print(f"   rep {rep}: {case:<27} {v[0]:6.2f} s wall; CPU s: own {v[3]:.2f}{servers}"
              f"{extra}", flush=True)
    return out


def median(xs):
    xs = sorted(xs)
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


def doveadm_status(a, env, limit, user, mailboxes):
    """{folder: messages} as the source Dovecot sees them; opening each folder makes it scan
    the Maildir and write its uidlist and index now, as it would have at delivery."""
    out = subprocess.run(["doveadm", "-c", f"{a.src_dir}/dovecot.conf", "-f", "tab", "mailbox",
                          "status", "-u", user, "messages", *mailboxes],
                         env=env, capture_output=True, text=True, timeout=limit)
    seen = {}
    for line in out.stdout.splitlines()[1:]:  # the first line is the header
        name, _, messages = line.rpartition("\t")
        if messages.isdigit():
            seen[name] = int(messages)
    return out.returncode, seen, out.stderr.strip()


def main():
    ap = argparse.ArgumentParser(description="the timed part of bench/run.sh")
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--reps", type=int, required=True)
    ap.add_argument("--noop-samples", type=int, default=3,
                    help="timed no-op mirror runs per rep; the row shows their median")
    ap.add_argument("--src-dir", required=True, help="source Dovecot's dovecot.sh DIR")
    ap.add_argument("--dst-dir", required=True, help="target Dovecot's dovecot.sh DIR")
    ap.add_argument("--src-user", required=True, help="the POP3 source account")
    ap.add_argument("--imap-user", required=True, help="the IMAP source account (folders)")
    ap.add_argument("--password", required=True, help="every bench user's password")
    ap.add_argument("--pop3s-port", type=int, required=True, help="the source's POP3S port")
    ap.add_argument("--src-imaps-port", type=int, required=True, help="the source's IMAPS port")
    ap.add_argument("--imaps-port", type=int, required=True, help="the target's IMAPS port")
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
    pop_maildir = f"{a.src_dir}/mail/{a.src_user}/Maildir"
    imap_maildir = f"{a.src_dir}/mail/{a.imap_user}/Maildir"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root")}

    t0 = time.monotonic()
    st, per_folder = load_corpus(pop_maildir, imap_maildir, a.count, a.seed)
    mb = st["bytes"] / 1e6
    print(f"== corpus (seed {a.seed}): {a.count} messages, {mb:.1f} MB (largest "
          f"{st['max'] / 1e6:.2f} MB): {st['small']} small, {st['medium']} medium, {st['large']} "
          f"large; {st['no-id']} without Message-ID, {st['dup-id']} re-using one; written into "
          f"both accounts in {time.monotonic() - t0:.1f} s", flush=True)
    imap_tree = maildir_tree(imap_maildir)
    flags = ", ".join(f"{flag} {sum(e[letter] for e in imap_tree.values())}"
                      for flag, letter, _ in FLAGS)
    print(f"   IMAP account: {', '.join(f'{f} {n}' for f, n in per_folder.items())}; {flags}",
          flush=True)

    # Untimed: the source Dovecot indexes both accounts now; also proves it sees every message
    # in every folder before anything is timed.
    t0 = time.monotonic()
    for user, want in ((a.src_user, {"INBOX": a.count}), (a.imap_user, per_folder)):
        rc, seen, err = doveadm_status(a, env, limit, user, ["*"] if user == a.imap_user
                                       else ["INBOX"])
        if rc != 0 or seen != want:
            fail(f"source Dovecot sees {seen} in {user}'s account, expected {want}: {err}")
            return 1
    print(f"   source Dovecot indexed both accounts in {time.monotonic() - t0:.1f} s (untimed)",
          flush=True)
    # Untimed warm-up: a dry run reads every folder's index the way the timed runs will, so the
    # source's cache holds the fields mailferry fetches before rep 1 (as on a server in use),
    # and rep 1 is not the only one that builds it.
    report = f"{a.work}/report-warmup.json"
    argv = [a.mailferry, "migrate", "--dry-run", "--quiet", "--tls-ca", a.ca, "--report", report,
            "--from", f"imaps://{a.imap_user}@127.0.0.1:{a.src_imaps_port}",
            "--to", f"imaps://warmup@127.0.0.1:{a.imaps_port}"]
    ferry_env = dict(env, MAILFERRY_FROM_PASSWORD=a.password, MAILFERRY_TO_PASSWORD=a.password)
    rc, secs, _, _ = timed(argv, ferry_env, f"{a.work}/warmup.log", limit)
    if rc != 0:
        fail(f"warm-up dry run exited {rc}; tail of its log:\n{tail(f'{a.work}/warmup.log')}")
        return 1
    print(f"   warm-up: mailferry migrate --dry-run of the IMAP account in {secs:.2f} s "
          f"(untimed)", flush=True)
    shutil.rmtree(f"{a.dst_dir}/mail/warmup", ignore_errors=True)

    # Repetitions interleave the cases, so a burst of load from elsewhere on the machine hits
    # one rep of each rather than every rep of one case.
    print(f"== {a.reps} rep(s) of: {', '.join(c for c, _ in CASES)} "
          f"(that one {a.noop_samples} times)", flush=True)
    reps = [run_rep(a, rep, st["bytes"], imap_tree, env, limit, fail)
            for rep in range(1, a.reps + 1)]

    # ---- the table ----
    # What measure.py reports for a program that uses no memory: a peak at this floor means
    # "this much or less".
    floor = min(timed(["true"], env, f"{a.work}/true.log", 10)[2] for _ in range(3))
    head = ("case", "messages", "seconds", "msg/s", "MB/s", "peak RSS MiB", "x doveadm import")
    body = []
    for case, base in CASES:
        secs = median([r[case][0] for r in reps])
        # doveadm import moves the whole corpus; mailferry what its report says it copied.
        nbytes = median([st["bytes"] if r[case][1] is None else r[case][1] for r in reps])
        rss = max(r[case][2] for r in reps)
        ratio = median([r[case][0] / r[base][0] for r in reps])
        body.append((case, str(a.count), f"{secs:.3f}" if secs < 1 else f"{secs:.2f}",
                     f"{a.count / secs:.0f}", f"{nbytes / 1e6 / secs:.1f}" if nbytes else "-",
                     f"{rss:.1f}" if rss > floor + 0.2 else f"<={floor:.1f}", f"{ratio:.2f}"))
    widths = [max(len(r[k]) for r in [head] + body) for k in range(len(head))]
    print()
    print(f"mailferry bench: N={a.count}, seed {a.seed}, {mb:.1f} MB, POP3S and IMAPS (6 folders) "
          f"-> IMAPS on 127.0.0.1, {a.reps} rep(s)"
          f"{', --connections ' + str(a.connections) if a.connections else ''}, "
          f"mail on {os.path.dirname(a.work)}")
    for k, r in enumerate([head] + body):
        cells = [c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))]
        print("  ".join(cells))
        if k == 0:
            print("  ".join("-" * w for w in widths))
    print(f"seconds: median of the reps (mirror no-op: of each rep's median of "
          f"{a.noop_samples} runs); msg/s and MB/s from it\n(MB/s: bytes moved, the corpus "
          f"for doveadm import, the report's bytes_copied for mailferry);\nx doveadm import: "
          f"median of the per-rep ratios to the doveadm import of the same account (INBOX for\n"
          f"the POP3 rows, every folder for the IMAP rows); peak RSS: largest ru_maxrss of the "
          f"process over the reps,\nmeasured with a floor of {floor:.1f} MiB.")
    if failures:
        print(f"\nFAIL: {len(failures)} check(s) failed:", file=sys.stderr)
        for msg in failures:
            print(f"FAIL: {msg.splitlines()[0]}", file=sys.stderr)
        return 1
    print("\nall checks passed: exit codes 0; reports: copied == N then 0, failed 0, verified, "
          "mirror no-op flags_updated 0 and deleted 0;\non disk: N messages in the POP3 "
          "targets, and per folder the source's messages, flags and internal dates in the IMAP "
          "targets")
    return 0


if __name__ == "__main__":
    sys.exit(main())
