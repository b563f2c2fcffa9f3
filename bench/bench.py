#!/usr/bin/env python3
"""bench.py — the timed part of bench/run.sh: corpus, load, baseline, mailferry, table.

bench/run.sh starts the two Dovecot servers and calls this with their directories and ports; it
is not meant to be run by hand (run.sh's header documents the knobs). Python 3 standard library
only.

Steps:
  1. per link (loopback: --count messages; the slow link: the first --rtt-count of the same
     corpus), generate the messages from --seed (deterministic: the same count and seed give
     byte-identical messages) and write each one twice on the source server: into a POP3 user's
     Maildir/new/, and into an IMAP user's Maildir, spread over six folders (INBOX, Archive,
     Archive/2019, Sent, Lists/dev, Données) with flags (see FOLDERS and FLAGS);
  2. let the source Dovecot index those accounts (`doveadm mailbox status`, untimed), so no
     timed run pays for the first index build of a mailbox nobody has opened yet, and check
     that it sees every message in every folder; then one untimed `mailferry migrate --dry-run`
     of each IMAP account, which fills the source's cache with the fields mailferry asks for (a
     server in use has them from its users' mail clients);
  3. with --rtt-ms, run bench/latency_relay.py's self-test at that delay, then start the relay
     in front of the source's POP3 and IMAP ports and the target's IMAP port;
  4. per rep and link, each into a fresh target user: the baseline upload (bench/baseline.py,
     not mailferry) of the IMAP account's files; on loopback `doveadm import` of the same
     Maildir (the server's own floor); `mailferry migrate` POP3 -> IMAP and again (a no-op
     re-run: must copy 0); the same for the IMAP account (every folder); `mailferry mirror`
     with a fresh --state (a full copy), then --noop-samples times with nothing changed (each
     must copy 0 and update 0 flags);
  5. check exit codes, the reports and, on disk, the target Maildirs: N files for POP3; for the
     IMAP source and the baseline, per folder the same number of files, the same flags
     (\\Seen, \\Answered, \\Flagged from the Maildir file names) and the same internal dates
     (file mtimes) as the source;
  then the table of medians, each row's time also as a multiple of the baseline on its link.
Exit status: 0 when every check passed, 1 when any FAIL line was printed.
"""
import argparse
import base64
import grp
import json
import os
import pwd
import random
import select
import shutil
import subprocess
import sys
import time
import unicodedata

import round_trips

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
      - the POP3 user's INBOX: one file per message in new/ (deliver());
      - the IMAP user's folders (FOLDERS): the same file, hard-linked (the bytes are identical
        and Maildir never rewrites a message in place), as cur/NAME:2,<flags> with the FLAGS
        letters in Maildir order, as mail a client has already seen.
    Owned by nobody:nogroup, the mail processes' user in dovecot.sh. This beats `doveadm save`
    (one process per message) by far; see run.sh's header. Returns the corpus statistics and {folder: messages}."""
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
        path = deliver(pop_maildir, i, raw, delivered, uid, gid)
        folder = layout.choices(names, weights)[0]
        letters = "".join(sorted(letter for _, letter, p in FLAGS if layout.random() < p))
        name = os.path.basename(path)
        os.link(path, f"{folder_dir(imap_maildir, folder)}/cur/{name}:2,{letters}")
        per_folder[folder] += 1
        stats["bytes"] += len(raw)
        stats["max"] = max(stats["max"], len(raw))
        for part in kind.split("+"):
            stats[part] += 1
    return stats, per_folder


def deliver(maildir, i, raw, delivered, uid, gid):
    """Writes message number i into a Maildir's new/ as Dovecot would have delivered it:
    TIME.M<i>.bench,S=<size>,W=<size> (S = bytes on disk, W = size with CRLF line ends: equal,
    every line is CRLF; with them in the name Dovecot need not read the file to answer POP3
    LIST), mtime = delivery time (Dovecot's INTERNALDATE for Maildir), owned by uid:gid.
    Returns its path."""
    assert b"\n" not in raw.replace(b"\r\n", b""), "bare LF generated"
    path = f"{maildir}/new/{delivered}.M{i}.bench,S={len(raw)},W={len(raw)}"
    with open(path, "wb") as f:
        f.write(raw)
    os.chown(path, uid, gid)
    os.utime(path, (delivered, delivered))
    return path


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

# The table's rows, in the order of each link's run. The "x baseline" column divides each by
# the best (fastest) of the BASELINE_UPLOADS on the same link (transport and latency) in the
# same rep.
BASELINE = "baseline upload (not mailferry)"
# The upload baseline at these target connection counts: (connections, row, target user).
BASELINE_UPLOADS = [(1, BASELINE, "base"), (4, "baseline upload, 4 connections", "base4"),
                    (8, "baseline upload, 8 connections", "base8")]
BASELINE_COPY = "baseline IMAP copy (not mailferry)"
BASELINE_POP3 = "baseline POP3 copy (not mailferry)"
DOVEADM = "doveadm import (floor)"
# Not run: what a tool that waits a round trip per message (a RETR's, then an APPEND's) would
# take on the relayed link, from the relay's measured round trip.
PER_MESSAGE_TOOL = "tool waiting 2 round trips a message"
CASES = [*(row for _, row, _ in BASELINE_UPLOADS), BASELINE_COPY, BASELINE_POP3, DOVEADM,
         "mailferry POP3 copy", "mailferry POP3 no-op re-run", "mailferry POP3 no-op again",
         "mailferry IMAP copy", "mailferry IMAP no-op re-run", "mailferry IMAP no-op again",
         "mailferry mirror first run", "mailferry mirror no-op", PER_MESSAGE_TOOL]
# The cases an extra, untimed run with the protocol trace (-vvv) counts the round trips of, per
# phase (bench/round_trips.py), on the relayed link: (row, target user).
TRACED = [("mailferry POP3 copy", "phasepop"), ("mailferry IMAP copy", "phaseimap")]
HERE = os.path.dirname(os.path.abspath(__file__))


class Row:
    """One timed run: wall seconds, bytes moved (None: the whole corpus), peak RSS MiB, CPU
    seconds of the process, the servers' CPU seconds during it ([source, target] or None) and,
    through the relay, what the relay saw (relay_summary's dict, or None)."""

    def __init__(self, secs, nbytes, rss, cpu, servers=None, relay=None):
        self.secs, self.nbytes, self.rss, self.cpu = secs, nbytes, rss, cpu
        self.servers, self.relay = servers, relay


class RelayProcess:
    """bench/latency_relay.py in front of the source's POP3 and IMAP ports and the target's
    IMAP port, for the whole run; its --stats file (and, with --trace, its trace) is read per
    case (since)."""

    def __init__(self, a, delay_ms, targets):
        self.stats = f"{a.work}/relay-stats.jsonl"
        self.trace = f"{a.work}/relay-trace.txt" if a.trace else None
        self.proc = subprocess.Popen(
            [sys.executable, "-I", f"{HERE}/latency_relay.py", "--delay-ms", str(delay_ms),
             "--stats", self.stats, *(["--trace", self.trace] if self.trace else []),
             *(x for t in targets for x in ("--target", str(t)))],
            stdout=subprocess.PIPE, text=True)
        self.port_of = {}
        ready, _, _ = select.select([self.proc.stdout], [], [], 10)
        while ready:
            line = self.proc.stdout.readline().split()
            if not line or line == ["ready"]:
                break
            self.port_of[int(line[3])] = int(line[1])  # relay LISTEN -> TARGET
        if len(self.port_of) != len(targets):
            self.stop()
            raise RuntimeError("the latency relay did not start")
        self.role = {self.port_of[t]: role for t, role in zip(targets, ("source", "source",
                                                                        "target"))}

    def offset(self):
        """Where the stats and the trace files end now."""
        return tuple(os.path.getsize(p) if p and os.path.exists(p) else 0
                     for p in (self.stats, self.trace))

    def since(self, offset, trace_copy):
        """What the relay saw of the connections that ended since `offset`: per side
        (source, target), connections, turns (the client spoke again after the server had)
        and bytes each way. With --trace, the chunks since then go to `trace_copy`."""
        if self.trace:
            with open(self.trace, "rb") as f, open(trace_copy, "wb") as out_file:
                f.seek(offset[1])
                shutil.copyfileobj(f, out_file)
        out = {side: {"conns": 0, "turns": 0, "max_turns": 0, "up": 0, "down": 0}
               for side in ("source", "target")}
        with open(self.stats) as f:
            f.seek(offset[0])
            for line in f:
                s = json.loads(line)
                o = out[self.role[s["listen"]]]
                o["conns"] += 1
                o["turns"] += s["turns"]
                o["max_turns"] = max(o["max_turns"], s["turns"])
                o["up"] += s["up_bytes"]
                o["down"] += s["down_bytes"]
        return out

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def relay_text(r):
    """The relay's view of one case, for the per-rep lines."""
    if not r:
        return ""
    parts = [f"{side} {v['conns']} conn, {v['turns']} turns (max {v['max_turns']} on one), "
             f"{v['up'] / 1e6:.1f} MB up / {v['down'] / 1e6:.1f} MB down"
             for side, v in r.items() if v["conns"]]
    return "; relay: " + "; ".join(parts)


def run_doveadm_import(a, user, src_maildir, env, limit, log):
    """doveadm import of a whole Maildir into a fresh target user. INDEX=MEMORY keeps doveadm
    from writing index files next to the source's (it reads the same Maildir the source server
    serves); "" as the destination parent keeps the folder names (INBOX -> INBOX, Archive/2019
    -> Archive/2019); -s subscribes them. Returns (exit code, Row)."""
    rc, secs, rss, cpu = timed(["doveadm", "-c", f"{a.dst_dir}/dovecot.conf", "import", "-u",
                                user, "-s", f"maildir:{src_maildir}:INDEX=MEMORY", "", "all"],
                               env, log, limit)
    return rc, Row(secs, None, rss, cpu)


def run_baseline(a, link, source, user, port, env, limit, log, fail, rep):
    """bench/baseline.py's upload of the link's IMAP account (every folder) into a fresh user:
    `source` is ["--maildir", DIR] (its files) or ["--copy-port", PORT, "--copy-user", USER]
    (the account on the source server). Its seconds are its own (connect to the last answer;
    the Python start-up, ~30 ms, left out, which makes the baseline look faster, never
    slower). Returns a Row."""
    argv = [sys.executable, "-I", f"{HERE}/baseline.py", *source, "--port", str(port),
            "--user", user, "--timeout", str(limit)]
    if a.transport == "tls":
        argv += ["--tls-ca", a.ca]
    before = server_cpu(a.src_dir), server_cpu(a.dst_dir)
    rc, secs, rss, cpu = timed(argv, dict(env, BASELINE_PASSWORD=a.password), log, limit)
    time.sleep(0.3)  # untimed: lets the servers' session processes exit and be reaped
    servers = [server_cpu(d) - b for d, b in zip((a.src_dir, a.dst_dir), before)]
    result = {}
    with open(log) as f:
        for line in f:
            if line.startswith("{"):
                result = json.loads(line)
    if rc != 0 or result.get("messages") != link["count"]:
        fail(f"rep {rep}: {link['name']}: baseline exited {rc} after {result.get('messages')} "
             f"of {link['count']} messages; tail of its log:\n{tail(log)}")
    return Row(result.get("seconds", secs), result.get("bytes"), rss, cpu, servers)


def run_mailferry(a, case, argv, want, report, log, env, limit, fail, rep, relay):
    """One timed mailferry run; checks its exit code and that its report has the `want`
    values. Returns its Row and the report."""
    if a.connections:
        argv = argv + ["--connections", str(a.connections)]
    before = server_cpu(a.src_dir), server_cpu(a.dst_dir)
    offset = relay.offset() if relay else 0
    rc, secs, rss, cpu = timed(argv, env, log, limit)
    time.sleep(0.3)  # untimed: lets the servers' sessions (and the relay's) end and be reaped
    servers = [server_cpu(d) - b for d, b in zip((a.src_dir, a.dst_dir), before)]
    seen = relay.since(offset, log[:-len(".log")] + ".trace") if relay else None
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
    return Row(secs, rep_json.get("bytes_copied") or 0, rss, cpu, servers, seen), rep_json


def check_tree(case, rep, want_tree, maildir, fail, strict=True):
    """Compares a target Maildir with the source account's folders on disk. With strict, any
    difference fails; otherwise (doveadm import, the reference) a difference in flags or dates
    is only noted, a difference in messages still fails."""
    for kind, text in compare_trees(want_tree, maildir_tree(maildir))[:8]:
        if strict or kind == "messages":
            fail(f"rep {rep}: {case}: {text}")
        else:
            print(f"   note: rep {rep}: {case}: {text}", flush=True)


def run_rep(a, rep, link, env, limit, fail):
    """One repetition of every case of one link (loopback or through the relay), each into
    fresh target users (<link tag><name><rep>). Returns {case: Row}; each failed check goes
    to fail()."""
    out = {}
    n, tree, tag = link["count"], link["tree"], link["tag"]
    dst_mail = f"{a.dst_dir}/mail"
    relay = link["relay"]
    src_pop3, src_imap, dst_imap = link["ports"]
    ferry_env = dict(env, MAILFERRY_FROM_PASSWORD=a.password, MAILFERRY_TO_PASSWORD=a.password)
    if a.transport == "plain":
        pop_scheme, imap_scheme, security = "pop3", "imap", ["--allow-plaintext"]
    else:
        pop_scheme, imap_scheme, security = "pop3s", "imaps", ["--tls-ca", a.ca]
    common = [*security, "--quiet"]
    pop_from = f"{pop_scheme}://{link['pop_user']}@127.0.0.1:{src_pop3}"
    imap_from = f"{imap_scheme}://{link['imap_user']}@127.0.0.1:{src_imap}"

    def user(name):
        return f"{tag}{name}{rep}"

    def to(name, folder=""):
        return f"{imap_scheme}://{user(name)}@127.0.0.1:{dst_imap}{folder}"

    def files(name):
        return f"{a.work}/report-{tag}-{name}-{rep}.json", f"{a.work}/{tag}-{name}-{rep}.log"

    def copy_argv(source, name, report):
        """`mailferry migrate` from `source` into target user `name`, without verbosity."""
        folder = "/INBOX" if source == pop_from else ""
        return [a.mailferry, "migrate", "--from", source, "--to", to(name, folder),
                "--report", report, *security]

    # ---- the baselines: the IMAP account's files (at each connection count), then the
    # account on the source server, every folder, flags and dates; then the POP3 maildrop ----
    for case, name, source in (
            *((case, name, ["--maildir", link["imap_maildir"], "--connections", str(k)])
              for k, case, name in BASELINE_UPLOADS),
            (BASELINE_COPY, "basecopy", ["--copy-port", str(src_imap), "--copy-user",
                                         link["imap_user"]])):
        out[case] = run_baseline(a, link, source, user(name), dst_imap, env, limit,
                                 files(name)[1], fail, rep)
        check_tree(case, rep, tree, f"{dst_mail}/{user(name)}/Maildir", fail)
        shutil.rmtree(f"{dst_mail}/{user(name)}", ignore_errors=True)  # frees the tmpfs
    out[BASELINE_POP3] = run_baseline(a, link, ["--pop3-port", str(src_pop3), "--pop3-user",
                                                link["base_pop_user"]],
                                      user("basepop"), dst_imap, env, limit,
                                      files("basepop")[1], fail, rep)
    got = count_files(f"{dst_mail}/{user('basepop')}/Maildir")
    if got != n:
        fail(f"rep {rep}: {BASELINE_POP3}: target Maildir holds {got} messages, not {n}")
    shutil.rmtree(f"{dst_mail}/{user('basepop')}", ignore_errors=True)

    # ---- Dovecot's own floor (no network, so only on the loopback link) ----
    if relay is None:
        log = files("doveadm-import")[1]
        rc, out[DOVEADM] = run_doveadm_import(a, user("import"), link["imap_maildir"], env,
                                              limit, log)
        if rc != 0:
            fail(f"rep {rep}: doveadm import exited {rc}; tail of its log:\n{tail(log)}")
        check_tree(DOVEADM, rep, tree, f"{dst_mail}/{user('import')}/Maildir", fail,
                   strict=False)
        shutil.rmtree(f"{dst_mail}/{user('import')}", ignore_errors=True)

    # ---- POP3 source -> INBOX ----
    # The first re-run reads the headers of the copies, which the target server parses then
    # (verification asks it for UIDs and sizes only); a re-run after that finds them cached.
    for case, name, copied in (("mailferry POP3 copy", "pop-copy", n),
                               ("mailferry POP3 no-op re-run", "pop-noop", 0),
                               ("mailferry POP3 no-op again", "pop-noop2", 0)):
        report, log = files(name)
        argv = [*copy_argv(pop_from, "pop", report), "--quiet"]
        want = {"source_messages": n, "copied": copied, "already_present": n - copied,
                "failed": 0, "verified": True}
        out[case], rep_json = run_mailferry(a, case, argv, want, report, log, ferry_env, limit,
                                            fail, rep, relay)
        if copied and rep_json.get("bytes_copied") not in (None, link["bytes"]):
            print(f"   note: bytes_copied={rep_json.get('bytes_copied')}, the corpus has "
                  f"{link['bytes']} bytes", flush=True)
        got = count_files(f"{dst_mail}/{user('pop')}/Maildir")
        if got != n:
            fail(f"rep {rep}: {case}: target Maildir holds {got} messages, not {n}")
    shutil.rmtree(f"{dst_mail}/{user('pop')}", ignore_errors=True)

    # ---- IMAP source, every folder ----
    for case, name, copied in (("mailferry IMAP copy", "imap-copy", n),
                               ("mailferry IMAP no-op re-run", "imap-noop", 0),
                               ("mailferry IMAP no-op again", "imap-noop2", 0)):
        report, log = files(name)
        argv = [*copy_argv(imap_from, "imap", report), "--quiet"]
        want = {"source_messages": n, "copied": copied, "already_present": n - copied,
                "failed": 0, "verified": True}
        out[case], _ = run_mailferry(a, case, argv, want, report, log, ferry_env, limit, fail,
                                     rep, relay)
        check_tree(case, rep, tree, f"{dst_mail}/{user('imap')}/Maildir", fail)
    shutil.rmtree(f"{dst_mail}/{user('imap')}", ignore_errors=True)

    # ---- mirror: a first run with fresh state (a full copy), then runs with nothing changed.
    state = f"{a.work}/mirror-state-{tag}-{rep}"
    samples = []
    for k in range(a.noop_samples + 1):
        case = "mailferry mirror first run" if k == 0 else "mailferry mirror no-op"
        report, log = files(f"mirror-{k}")
        argv = [a.mailferry, "mirror", "--from", imap_from, "--to", to("mirror"),
                "--state", state, "--report", report, *common]
        copied = n if k == 0 else 0
        want = {"source_messages": n, "copied": copied, "already_present": n - copied,
                "flags_updated": 0, "deleted": 0, "failed": 0, "verified": True}
        row, _ = run_mailferry(a, case, argv, want, report, log, ferry_env, limit, fail, rep,
                               relay)
        if k == 0:
            out[case] = row
            check_tree(case, rep, tree, f"{dst_mail}/{user('mirror')}/Maildir", fail)
        else:
            samples.append(row)
    # The no-op is short and so noisy: the row is the median of the samples.
    samples.sort(key=lambda r: r.secs)
    out["mailferry mirror no-op"] = samples[len(samples) // 2]
    check_tree("mailferry mirror no-op", rep, tree, f"{dst_mail}/{user('mirror')}/Maildir",
               fail)
    shutil.rmtree(f"{dst_mail}/{user('mirror')}", ignore_errors=True)
    shutil.rmtree(state, ignore_errors=True)

    # ---- through the relay: the round trips per phase of one more run of each copy, with
    # the protocol trace (untimed, rep 1 only), and the tool that waits for each answer ----
    if relay is not None:
        if rep == 1:
            link["round_trips"] = {}
            for case, name in TRACED:
                report, log = files(name)
                source = pop_from if "POP3" in case else imap_from
                argv = [*copy_argv(source, name, report), "-vvv"]
                rc, _, _, _ = timed(argv, ferry_env, log, limit)
                if rc != 0:
                    fail(f"rep {rep}: {case} with -vvv exited {rc}; tail of its log:\n"
                         f"{tail(log)}")
                with open(log, errors="replace") as f:
                    phases = round_trips.count(f, dst_imap)
                with open(report) as f:
                    seconds = json.load(f).get("duration_s") or 0
                link["round_trips"][case] = (phases, seconds)
                shutil.rmtree(f"{dst_mail}/{user(name)}", ignore_errors=True)
        out[PER_MESSAGE_TOOL] = Row(n * 2 * link["rtt_s"], None, 0, 0)

    # Where the time goes, per case: CPU seconds of the measured process itself and of the
    # source and target Dovecot during its run (on 2 cores, a client CPU far below the wall
    # time means it waits for the servers or, through the relay, for round trips); through the
    # relay also its count of turns per side.
    for case, v in out.items():
        if case == PER_MESSAGE_TOOL:
            continue
        extra = ""
        if case == "mailferry mirror no-op":
            extra = f" (median of {', '.join(f'{r.secs:.3f}' for r in samples)})"
        print_cpu_line(rep, link["name"], case, v, extra)
    return out


def print_cpu_line(rep, link_name, case, row, extra=""):
    """One case's per-rep line: wall time, CPU seconds of the process and of both servers."""
    servers = f", source server {row.servers[0]:.2f}, target server {row.servers[1]:.2f}" \
        if row.servers else ""
    print(f"   rep {rep} {link_name}: {case:<34} {row.secs:6.2f} s wall; CPU s: own "
          f"{row.cpu:.2f}{servers}{extra}{relay_text(row.relay)}", flush=True)


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


def prepare_link(a, env, limit, fail, name, tag, count, pop_user, imap_user):
    """Loads `count` messages of the corpus into the link's two source accounts, has the
    source Dovecot index them and one untimed dry run warm its cache. Returns the link's dict,
    or None after a fail()."""
    pop_maildir = f"{a.src_dir}/mail/{pop_user}/Maildir"
    imap_maildir = f"{a.src_dir}/mail/{imap_user}/Maildir"
    t0 = time.monotonic()
    st, per_folder = load_corpus(pop_maildir, imap_maildir, count, a.seed)
    print(f"== {name} corpus (seed {a.seed}): {count} messages, {st['bytes'] / 1e6:.1f} MB "
          f"(largest {st['max'] / 1e6:.2f} MB): {st['small']} small, {st['medium']} medium, "
          f"{st['large']} large; {st['no-id']} without Message-ID, {st['dup-id']} re-using one; "
          f"written into accounts {pop_user} and {imap_user} in {time.monotonic() - t0:.1f} s",
          flush=True)
    # The POP3 baseline's own maildrop, the same files hard-linked: whatever a POP3 session
    # does to its maildrop (Dovecot moves the files from new/ to cur/ as the session opens it,
    # and marks them seen at QUIT) leaves mailferry's untouched.
    base_pop_user = f"b{pop_user}"
    base_pop_maildir = f"{a.src_dir}/mail/{base_pop_user}/Maildir"
    uid, gid = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
    make_maildir(base_pop_maildir, uid, gid)
    os.chown(os.path.dirname(base_pop_maildir), uid, gid)
    for entry in os.listdir(f"{pop_maildir}/new"):
        os.link(f"{pop_maildir}/new/{entry}", f"{base_pop_maildir}/new/{entry}")
    tree = maildir_tree(imap_maildir)
    flags = ", ".join(f"{flag} {sum(e[letter] for e in tree.values())}"
                      for flag, letter, _ in FLAGS)
    print(f"   IMAP account: {', '.join(f'{f} {n}' for f, n in per_folder.items())}; {flags}",
          flush=True)

    # Untimed: the source Dovecot indexes both accounts now; also proves it sees every message
    # in every folder before anything is timed.
    t0 = time.monotonic()
    for user, want in ((pop_user, {"INBOX": count}), (base_pop_user, {"INBOX": count}),
                       (imap_user, per_folder)):
        rc, seen, err = doveadm_status(a, env, limit, user, ["*"] if user == imap_user
                                       else ["INBOX"])
        if rc != 0 or seen != want:
            fail(f"source Dovecot sees {seen} in {user}'s account, expected {want}: {err}")
            return None
    # Untimed warm-up: a dry run reads every folder's index the way the timed runs will, so the
    # source's cache holds the fields mailferry fetches before rep 1 (as on a server in use),
    # and rep 1 is not the only one that builds it.
    scheme, security = (("imap", ["--allow-plaintext"]) if a.transport == "plain"
                        else ("imaps", ["--tls-ca", a.ca]))
    log = f"{a.work}/warmup-{tag}.log"
    argv = [a.mailferry, "migrate", "--dry-run", "--quiet", *security,
            "--report", f"{a.work}/report-warmup-{tag}.json",
            "--from", f"{scheme}://{imap_user}@127.0.0.1:{a.src_imap_port}",
            "--to", f"{scheme}://warmup@127.0.0.1:{a.dst_imap_port}"]
    ferry_env = dict(env, MAILFERRY_FROM_PASSWORD=a.password, MAILFERRY_TO_PASSWORD=a.password)
    rc, _, _, _ = timed(argv, ferry_env, log, limit)
    if rc != 0:
        fail(f"warm-up dry run exited {rc}; tail of its log:\n{tail(log)}")
        return None
    shutil.rmtree(f"{a.dst_dir}/mail/warmup", ignore_errors=True)
    print(f"   source Dovecot indexed both accounts, and a dry run warmed its cache, in "
          f"{time.monotonic() - t0:.1f} s (untimed)", flush=True)
    return {"name": name, "tag": tag, "count": count, "bytes": st["bytes"], "max": st["max"],
            "tree": tree,
            "pop_user": pop_user, "base_pop_user": base_pop_user, "imap_user": imap_user,
            "imap_maildir": imap_maildir,
            "relay": None, "ports": (a.src_pop3_port, a.src_imap_port, a.dst_imap_port)}


def relay_self_test(a, delay_ms, fail):
    """latency_relay.py --self-test at the bench's delay, printed: the RTT rows mean what they
    say only if the relay adds 2 x delay per round trip and does not cap the bytes. Returns the
    round trip it measured, in seconds (2 x delay if it printed none)."""
    out = subprocess.run([sys.executable, "-I", f"{HERE}/latency_relay.py", "--self-test",
                          "--delay-ms", str(delay_ms)], capture_output=True, text=True,
                         timeout=120)
    rtt = 2 * delay_ms / 1000
    for line in out.stdout.splitlines():
        print(f"   relay self-test: {line}", flush=True)
        if line.startswith("ping-pong: median round trip "):
            rtt = float(line.split()[4]) / 1000
    if out.returncode != 0:
        fail(f"latency relay self-test failed: {out.stderr.strip() or 'see above'}")
    return rtt


def print_table(a, links, reps, floor):
    head = ("case", "link", "messages", "seconds", "msg/s", "MB/s", "peak RSS MiB",
            "x baseline")
    body = []
    for link in links:
        for case in CASES:
            rows = [r[link["tag"]][case] for r in reps if case in r[link["tag"]]]
            if not rows:
                continue
            secs = median([r.secs for r in rows])
            # The baseline and doveadm import move the whole corpus; mailferry what its report
            # says it copied.
            nbytes = median([link["bytes"] if r.nbytes is None else r.nbytes for r in rows])
            rss = max(r.rss for r in rows)
            ratio = median([r[link["tag"]][case].secs / yardstick(r[link["tag"]])
                            for r in reps if case in r[link["tag"]]])
            n = link["count"]
            body.append((case, link["name"], str(n),
                         f"{secs:.3f}" if secs < 1 else f"{secs:.2f}", f"{n / secs:.0f}",
                         f"{nbytes / 1e6 / secs:.1f}" if nbytes else "-",
                         "-" if case == PER_MESSAGE_TOOL else
                         f"{rss:.1f}" if rss > floor + 0.2 else f"<={floor:.1f}",
                         f"{ratio:.2f}"))
    widths = [max(len(r[k]) for r in [head] + body) for k in range(len(head))]
    print()
    links_text = " and ".join(f"{link['name']} ({link['count']} messages, "
                              f"{link['bytes'] / 1e6:.1f} MB)" for link in links)
    transport = ("plaintext IMAP/POP3 (as the reference numbers)" if a.transport == "plain"
                 else "IMAPS/POP3S")
    print(f"mailferry bench: seed {a.seed}, {transport}, POP3 and IMAP (6 folders) -> IMAP on "
          f"127.0.0.1; {links_text}; {a.reps} rep(s)"
          f"{', --connections ' + str(a.connections) if a.connections else ''}, "
          f"mail on {os.path.dirname(a.work)}")
    for k, r in enumerate([head] + body):
        cells = [c.ljust(w) if j < 2 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))]
        print("  ".join(cells))
        if k == 0:
            print("  ".join("-" * w for w in widths))
    print(f"seconds: median of the reps (mirror no-op: of each rep's median of "
          f"{a.noop_samples} runs); msg/s and MB/s from it (MB/s: bytes moved, the corpus for\n"
          f"the baselines and doveadm import, the report's bytes_copied for mailferry); x "
          f"baseline: median of the per-rep ratios to the fastest baseline upload of the rep "
          f"\n(bench/baseline.py at 1, 4 and 8 target connections: a raw pipelined MULTIAPPEND + "
          f"LITERAL+ client, not part of mailferry, its own seconds) on the same link;\n"
          f"baseline IMAP copy: the same client reading the IMAP account from the source server "
          f"(LIST, then every folder's EXAMINE + UID FETCH at once,\nno diff); baseline POP3 "
          f"copy: the same client reading the POP3 maildrop (USER PASS STAT UIDL at once, then "
          f"every RETR at once);\n{PER_MESSAGE_TOOL}: not run, messages x 2 x the relay's "
          f"measured round trip; peak RSS: largest ru_maxrss of the process over the\nreps, "
          f"measured with a floor of {floor:.1f} MiB.")
    print_targets(links, reps)
    print_round_trips(links)


def yardstick(rows):
    """The fastest upload baseline of one rep on one link: what the ratios divide by."""
    return min(rows[case].secs for _, case, _ in BASELINE_UPLOADS)


def print_targets(links, reps):
    """Issue 17's slow-link and POP3 targets, each with its ratio (median over the reps)."""
    print("\ntargets (issue 17; median of the per-rep ratios):")

    def ratio(link, case, over):
        return median([r[link["tag"]][case].secs / over(r[link["tag"]]) for r in reps])

    for link in links:
        if link["relay"] is None:
            got = ratio(link, "mailferry POP3 copy", lambda rows: rows[BASELINE_POP3].secs)
            print(f"  {link['name']}: mailferry POP3 copy / baseline POP3 copy = {got:.2f} "
                  f"(target <= 1.05): {'pass' if got <= 1.05 else 'MISS'}")
            continue
        for case in ("mailferry POP3 copy", "mailferry IMAP copy"):
            got = ratio(link, case, yardstick)
            faster = ratio(link, PER_MESSAGE_TOOL, lambda rows, c=case: rows[c].secs)
            print(f"  {link['name']}: {case} / fastest baseline upload = {got:.2f} (target <= "
                  f"1.1): {'pass' if got <= 1.1 else 'MISS'}; {faster:.0f}x faster than a "
                  f"{PER_MESSAGE_TOOL} (target >= 100): {'pass' if faster >= 100 else 'MISS'}")


def print_round_trips(links):
    """What the traced runs waited for, per phase and side (bench/round_trips.py)."""
    for link in links:
        if not link.get("round_trips"):
            continue
        rtt = link["rtt_s"]
        print(f"\nround trips waited for, per phase, source/target (summed over connections; "
              f"one extra run with -vvv, rep 1; bench/round_trips.py), {link['name']}:")
        for case, (phases, seconds) in link["round_trips"].items():
            cells = "  ".join(f"{phase} {sides['source']}/{sides['target']}"
                              for phase, sides in phases.items())
            print(f"  {case:<20} {cells}; the run took {seconds:.2f} s = "
                  f"{seconds / rtt:.1f} round trips")


def add_server_args(ap):
    """The arguments bench/run.sh gives both the speed part and the memory part: the servers,
    the corpus seed, the repetitions, the binary and where results go."""
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--reps", type=int, required=True)
    ap.add_argument("--case-timeout", type=int, default=300,
                    help="seconds after which a case is killed (and fails)")
    ap.add_argument("--transport", choices=("plain", "tls"), required=True)
    ap.add_argument("--src-dir", required=True, help="source Dovecot's dovecot.sh DIR")
    ap.add_argument("--dst-dir", required=True, help="target Dovecot's dovecot.sh DIR")
    ap.add_argument("--password", required=True, help="every bench user's password")
    ap.add_argument("--src-pop3-port", type=int, required=True,
                    help="the source's POP3 port (POP3S with --transport tls)")
    ap.add_argument("--src-imap-port", type=int, required=True,
                    help="the source's IMAP port (IMAPS with --transport tls)")
    ap.add_argument("--dst-imap-port", type=int, required=True,
                    help="the target's IMAP port (IMAPS with --transport tls)")
    ap.add_argument("--ca", help="both servers' certificates, concatenated (--transport tls)")
    ap.add_argument("--mailferry", required=True)
    ap.add_argument("--connections", type=int, help="passed to mailferry when given")
    ap.add_argument("--work", required=True, help="directory for logs and reports")


class Checks:
    """The checks that failed: each printed when it fails, and all of them again at the end."""

    def __init__(self):
        self.failures = []

    def fail(self, msg):
        self.failures.append(msg)
        print(f"FAIL: {msg}", file=sys.stderr, flush=True)

    def verdict(self, passed):
        """Prints the summary (`passed` when every check held) and returns the exit code."""
        if self.failures:
            print(f"\nFAIL: {len(self.failures)} check(s) failed:", file=sys.stderr)
            for msg in self.failures:
                print(f"FAIL: {msg.splitlines()[0]}", file=sys.stderr)
            return 1
        print(f"\n{passed}")
        return 0


def case_env():
    """The environment mailferry and the baselines run in: nothing of the caller's but a path
    and a home."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root")}


def main():
    ap = argparse.ArgumentParser(description="the timed part of bench/run.sh")
    ap.add_argument("--count", type=int, required=True, help="messages on the loopback link")
    ap.add_argument("--rtt-count", type=int, required=True, help="messages through the relay")
    ap.add_argument("--rtt-ms", type=float, required=True,
                    help="round trip the relay adds (0: no relayed link)")
    ap.add_argument("--noop-samples", type=int, default=3,
                    help="timed no-op mirror runs per rep; the row shows their median")
    ap.add_argument("--src-user", required=True, help="the POP3 source account")
    ap.add_argument("--imap-user", required=True, help="the IMAP source account (folders)")
    ap.add_argument("--rtt-src-user", required=True, help="the POP3 account of the relay link")
    ap.add_argument("--rtt-imap-user", required=True, help="the IMAP account of the relay link")
    ap.add_argument("--trace", action="store_true",
                    help="keep the relay's chunk trace of every relayed mailferry case")
    add_server_args(ap)
    a = ap.parse_args()
    checks = Checks()
    fail = checks.fail
    limit = a.case_timeout
    env = case_env()

    links = [prepare_link(a, env, limit, fail, "loopback", "l", a.count, a.src_user,
                          a.imap_user)]
    relay = None
    if a.rtt_ms > 0:
        links.append(prepare_link(a, env, limit, fail, f"{a.rtt_ms:g}ms RTT", "r", a.rtt_count,
                                  a.rtt_src_user, a.rtt_imap_user))
    if None in links:
        return 1
    try:
        if a.rtt_ms > 0:
            links[1]["rtt_s"] = relay_self_test(a, a.rtt_ms / 2, fail)
            ports = (a.src_pop3_port, a.src_imap_port, a.dst_imap_port)
            relay = RelayProcess(a, a.rtt_ms / 2, ports)
            links[1]["relay"] = relay
            links[1]["ports"] = tuple(relay.port_of[p] for p in ports)
            print(f"   latency relay: one-way delay {a.rtt_ms / 2:g} ms on 127.0.0.1 ports "
                  f"{', '.join(f'{relay.port_of[p]} -> {p}' for p in ports)}", flush=True)
        # Repetitions interleave the cases, so a burst of load from elsewhere on the machine
        # hits one rep of each rather than every rep of one case.
        print(f"== {a.reps} rep(s) of, per link: {', '.join(CASES)} (that one "
              f"{a.noop_samples} times; {DOVEADM} on loopback only)", flush=True)
        reps = [{link["tag"]: run_rep(a, rep, link, env, limit, fail) for link in links}
                for rep in range(1, a.reps + 1)]
    finally:
        if relay:
            relay.stop()

    # What measure.py reports for a program that uses no memory: a peak at this floor means
    # "this much or less".
    floor = min(timed(["true"], env, f"{a.work}/true.log", 10)[2] for _ in range(3))
    print_table(a, links, reps, floor)
    return checks.verdict(
        "all checks passed: exit codes 0; the baselines landed every message with its "
        "folder, flags and date; mailferry's reports: copied == N then 0,\nfailed 0, "
        "verified, mirror no-op flags_updated 0 and deleted 0; on disk: N messages in the "
        "POP3 targets, and per folder the source's\nmessages, flags and internal dates in "
        "the IMAP targets")


if __name__ == "__main__":
    sys.exit(main())
