#!/usr/bin/env python3
"""memory.py — the timed part of `bench/run.sh --memory`: mailferry's peak RSS against issue 7's
targets.

bench/run.sh starts the two Dovecot servers (with the users named below) and calls this instead
of bench.py; it is not meant to be run by hand (run.sh's header documents the knobs). It uses
bench.py's corpus, loading, timing and checks. Python 3 standard library only.

Steps:
  1. the big mailbox: --big-mb MB in one realistic multipart/mixed message (headers from the
     corpus, a short text part, one base64 attachment of random bytes, CRLF line ends) among a
     few small corpus messages, generated from --seed into the INBOX of the source user BIG_USER,
     read by both POP3 and IMAP;
  2. two loopback mailboxes of the bench corpus: --count messages (SMALL) and --memory-count
     (LARGE; the first --count of them are the same messages), each as a POP3 user and a
     six-folder IMAP user, indexed and warmed as bench.py does;
  3. per rep, each into a fresh target user: `mailferry migrate` POP3 -> IMAP and IMAP -> IMAP
     of each mailbox, with the report checks of bench.py (copied == N, failed 0, verified); the
     big mailbox's target must hold every source message byte for byte under the test
     harness's normalisation (normalize_crlf: Dovecot's Maildir stores LF line ends), the corpus
     targets N files (POP3) or the source's folders, flags and dates (IMAP);
  then a table of peak RSS (largest ru_maxrss over the reps) and the targets, each marked pass
  or MISS: RSS / message size <= 3 for the big message, SMALL -> LARGE growth <= 10%, and every
  corpus copy <= 64 MiB.
Exit status: 0 when every check passed (a MISS of a target is reported, not a failure), 1 when
any FAIL line was printed.
"""
import argparse
import grp
import hashlib
import os
import pwd
import re
import shutil
import sys

import bench

# Source users; run.sh creates them. The SMALL mailbox reuses bench.py's loopback accounts.
SMALL_USERS = ("pop", "imap")
LARGE_USERS = ("kpop", "kimap")
BIG_USER = "big"
# Target users are <tag><pop|imap><rep>: tag s (SMALL), k (LARGE), b (the big mailbox).
SMALL_MESSAGES_AROUND_BIG = 4

# Issue 7's memory targets.
MAX_RSS_PER_BYTE = 3.0
MAX_GROWTH = 0.10
MAX_RSS_MIB = 64


def big_message(corpus, size):
    """A multipart/mixed message of `size` bytes give or take one base64 line: a text part and
    one base64 attachment (random bytes, so nothing along the way can compress it)."""
    rng = corpus.rng
    ts = rng.randint(bench.DATE_FROM, bench.DATE_TO)
    boundary = f"=_bench_{rng.getrandbits(64):016x}"
    head = corpus.headers(0, ts, f"<big.{ts}.{rng.getrandbits(40):010x}@example.org>",
                          f'Content-Type: multipart/mixed;\r\n\tboundary="{boundary}"')
    text = (f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            f"{corpus.text(1500, 0)}\r\n--{boundary}\r\n"
            'Content-Type: application/pdf; name="scan.pdf"\r\n'
            'Content-Disposition: attachment; filename="scan.pdf"\r\n'
            "Content-Transfer-Encoding: base64\r\n\r\n")
    end = f"\r\n--{boundary}--\r\n"
    # b64_block turns every 57 bytes into a 76-character line plus CRLF.
    payload = (size - len(head) - len(text) - len(end)) // 78 * 57
    return (head + text).encode() + bench.b64_block(rng.randbytes(payload)).encode() + \
        end.encode(), ts


def load_big_mailbox(maildir, seed, size):
    """Writes the big message among SMALL_MESSAGES_AROUND_BIG corpus messages into a Maildir's
    new/. Returns the messages' bytes in delivery order."""
    uid, gid = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
    bench.make_maildir(maildir, uid, gid)
    os.chown(os.path.dirname(maildir), uid, gid)
    corpus = bench.Corpus(seed)
    messages = []
    for i in range(1, SMALL_MESSAGES_AROUND_BIG + 2):
        if i == SMALL_MESSAGES_AROUND_BIG // 2 + 1:
            raw, ts = big_message(corpus, size)
            delivered = ts + 60
        else:
            raw, _, delivered = corpus.message(i)
        bench.deliver(maildir, i, raw, delivered, uid, gid)
        messages.append(raw)
    return messages


def normalize_crlf(raw):
    """tests/support's normalize_crlf: every line ending (an LF with any CRs before it) becomes
    CRLF, CRs at the very end are dropped, NUL becomes 0x80. Dovecot's Maildir keeps messages
    with LF line ends (mail_save_crlf=no), so a copy is exact when the two normalised forms are
    equal."""
    return re.sub(rb"\r*\n", b"\r\n", raw).rstrip(b"\r").replace(b"\0", b"\x80")


def digest(raw):
    return hashlib.sha256(normalize_crlf(raw)).hexdigest()


def digests(maildir):
    """{SHA-256 of the normalised message: size on disk} of every file in a Maildir's INBOX."""
    out = {}
    for sub in ("cur", "new"):
        base = f"{maildir}/{sub}"
        for name in os.listdir(base) if os.path.isdir(base) else []:
            with open(f"{base}/{name}", "rb") as f:
                raw = f.read()
            out[digest(raw)] = len(raw)
    return out


def copy_cases(a, link, rep, env, limit, fail):
    """POP3 -> IMAP and IMAP -> IMAP copies of one mailbox into fresh target users, with
    bench.py's report checks. Returns {"POP3"|"IMAP": (Row, target Maildir)}; the caller checks
    the target and removes it."""
    scheme = {"plain": ("pop3", "imap", ["--allow-plaintext"]),
              "tls": ("pop3s", "imaps", ["--tls-ca", a.ca])}
    pop_scheme, imap_scheme, security = scheme[a.transport]
    n = link["count"]
    want = {"source_messages": n, "copied": n, "already_present": 0, "failed": 0,
            "verified": True}
    ferry_env = dict(env, MAILFERRY_FROM_PASSWORD=a.password, MAILFERRY_TO_PASSWORD=a.password)
    out = {}
    for proto, name, from_url, folder in (
            ("POP3", "pop", f"{pop_scheme}://{link['pop_user']}@127.0.0.1:{a.src_pop3_port}",
             "/INBOX"),
            ("IMAP", "imap", f"{imap_scheme}://{link['imap_user']}@127.0.0.1:{a.src_imap_port}",
             "")):
        target = f"{link['tag']}{name}{rep}"
        report = f"{a.work}/report-{target}.json"
        argv = [a.mailferry, "migrate", "--from", from_url,
                "--to", f"{imap_scheme}://{target}@127.0.0.1:{a.dst_imap_port}{folder}",
                "--report", report, *security, "--quiet"]
        case = f"mailferry {proto} copy"
        row, _ = bench.run_mailferry(a, case, argv, want, report, f"{a.work}/{target}.log",
                                     ferry_env, limit, fail, rep, None)
        bench.print_cpu_line(rep, link["name"], case, row, f"; peak RSS {row.rss:.1f} MiB")
        out[proto] = row, f"{a.dst_dir}/mail/{target}/Maildir"
    return out


def prepare_big(a, env, limit, fail):
    """Loads and indexes the big mailbox. Returns its link dict and its messages' digests."""
    maildir = f"{a.src_dir}/mail/{BIG_USER}/Maildir"
    messages = load_big_mailbox(maildir, a.seed, a.big_mb * 1_000_000)
    big = max(len(m) for m in messages)
    print(f"== big mailbox (seed {a.seed}): one {big / 1e6:.1f} MB multipart message with a "
          f"base64 attachment among {len(messages) - 1} corpus messages, in account {BIG_USER}",
          flush=True)
    rc, seen, err = bench.doveadm_status(a, env, limit, BIG_USER, ["INBOX"])
    if rc != 0 or seen != {"INBOX": len(messages)}:
        fail(f"source Dovecot sees {seen} in {BIG_USER}'s account, expected "
             f"{len(messages)}: {err}")
        return None, None
    link = {"name": f"big {a.big_mb} MB", "tag": "b", "count": len(messages),
            "bytes": sum(len(m) for m in messages), "max": big, "pop_user": BIG_USER,
            "imap_user": BIG_USER}
    return link, {digest(m): len(m) for m in messages}


def run_reps(a, big, big_digests, corpora, env, limit, fail):
    """Every case of every rep. Returns {(link tag, "POP3"|"IMAP"): [Row per rep]}."""
    rows = {}
    for rep in range(1, a.reps + 1):
        for link in [big, *corpora]:
            for proto, (row, maildir) in copy_cases(a, link, rep, env, limit, fail).items():
                rows.setdefault((link["tag"], proto), []).append(row)
                if link is big:
                    got = digests(maildir)
                    if got.keys() != big_digests.keys() or \
                            bench.count_files(maildir) != big["count"]:
                        missing = sorted(n for d, n in big_digests.items() if d not in got)
                        extra = sorted(n for d, n in got.items() if d not in big_digests)
                        fail(f"rep {rep}: {proto} copy of the big mailbox: source messages of "
                             f"{missing} bytes are not on the target (normalised); it holds "
                             f"others of {extra} bytes on disk")
                elif proto == "POP3":
                    got = bench.count_files(maildir)
                    if got != link["count"]:
                        fail(f"rep {rep}: {link['name']} POP3 copy: target Maildir holds {got} "
                             f"messages, not {link['count']}")
                else:
                    bench.check_tree(f"{link['name']} IMAP copy", rep, link["tree"], maildir,
                                     fail)
                shutil.rmtree(os.path.dirname(maildir), ignore_errors=True)  # frees the tmpfs
    return rows


def verdict(ok):
    return "pass" if ok else "MISS"


def print_tables(a, big, corpora, rows):
    head = ("case", "messages", "MB", "largest MB", "seconds", "peak RSS MiB",
            "RSS / largest")
    body = []
    peak = {}
    for link in [big, *corpora]:
        for proto in ("POP3", "IMAP"):
            rs = rows[(link["tag"], proto)]
            peak[(link["tag"], proto)] = rss = max(r.rss for r in rs)
            body.append((f"mailferry {proto} copy, {link['name']}", str(link["count"]),
                         f"{link['bytes'] / 1e6:.1f}", f"{link['max'] / 1e6:.2f}",
                         f"{bench.median([r.secs for r in rs]):.2f}", f"{rss:.1f}",
                         f"{rss * 2**20 / link['max']:.2f}"))
    widths = [max(len(r[k]) for r in [head] + body) for k in range(len(head))]
    print()
    connections = f"--connections {a.connections}" if a.connections else "default connections"
    print(f"mailferry memory: seed {a.seed}, {a.transport}, loopback, {connections}, "
          f"{a.reps} rep(s), mail on {os.path.dirname(a.work)}")
    for k, r in enumerate([head] + body):
        print("  ".join(c.ljust(w) if j == 0 else c.rjust(w)
                        for j, (c, w) in enumerate(zip(r, widths))))
        if k == 0:
            print("  ".join("-" * w for w in widths))
    print("peak RSS: largest ru_maxrss of the process over the reps (bench/measure.py); "
          "RSS / largest: that peak over the mailbox's largest message, both in bytes.")

    small, large = corpora
    print("\ntargets (issue 7):")
    for proto in ("POP3", "IMAP"):
        ratio = peak[("b", proto)] * 2**20 / big["max"]
        print(f"  {verdict(ratio <= MAX_RSS_PER_BYTE)}  {proto}: the {big['max'] / 1e6:.1f} MB "
              f"message costs {ratio:.2f}x its size (at most {MAX_RSS_PER_BYTE:g}x)")
    for proto in ("POP3", "IMAP"):
        lo, hi = peak[("s", proto)], peak[("k", proto)]
        growth = hi / lo - 1
        print(f"  {verdict(growth <= MAX_GROWTH)}  {proto}: {large['count']} messages "
              f"{hi:.1f} MiB vs {small['count']} messages {lo:.1f} MiB: {growth:+.1%} "
              f"(at most +{MAX_GROWTH:.0%})")
    top = max((peak[(link["tag"], proto)], link["name"], proto)
              for link in corpora for proto in ("POP3", "IMAP"))
    note = "" if not a.connections else \
        f" (measured with --connections {a.connections}; the target is for the default)"
    print(f"  {verdict(top[0] <= MAX_RSS_MIB)}  corpus copies: at most {top[0]:.1f} MiB "
          f"({top[2]}, {top[1]}), the limit {MAX_RSS_MIB} MiB{note}")


def main():
    ap = argparse.ArgumentParser(description="the timed part of bench/run.sh --memory")
    ap.add_argument("--count", type=int, required=True, help="messages in the SMALL mailbox")
    ap.add_argument("--memory-count", type=int, required=True,
                    help="messages in the LARGE mailbox")
    ap.add_argument("--big-mb", type=int, required=True, help="size of the big message, MB")
    bench.add_server_args(ap)
    a = ap.parse_args()
    checks = bench.Checks()
    fail = checks.fail
    limit = a.case_timeout
    env = bench.case_env()
    big, big_digests = prepare_big(a, env, limit, fail)
    corpora = [bench.prepare_link(a, env, limit, fail, f"{count} messages", tag, count, *users)
               for count, tag, users in ((a.count, "s", SMALL_USERS),
                                         (a.memory_count, "k", LARGE_USERS))]
    if big is None or None in corpora:
        return 1
    rows = run_reps(a, big, big_digests, corpora, env, limit, fail)
    print_tables(a, big, corpora, rows)
    return checks.verdict(
        "all checks passed: exit codes 0; mailferry's reports: copied == N, failed 0, "
        "verified; on disk: every message of the big mailbox\nbyte for byte, N messages in "
        "the POP3 targets, and per folder the source's messages, flags and internal dates "
        "in the IMAP targets")


if __name__ == "__main__":
    sys.exit(main())
