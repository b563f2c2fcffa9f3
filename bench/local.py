#!/usr/bin/env python3
"""local.py — the timed part of `bench/run.sh --local`: backups to local disk and restores,
against mbsync and the baseline upload (issue 15's speed targets).

bench/run.sh starts the two Dovecot servers (with the users named below) and calls this instead
of bench.py; it is not meant to be run by hand (run.sh's header documents the knobs). It uses
bench.py's corpus, loading, timing and checks. Python 3 standard library only.

Steps:
  1. load --count messages of the bench corpus into the source's six-folder IMAP account (and
     its POP3 twin, which prepare_link loads too), indexed and warmed as bench.py does;
  2. per rep, each into a fresh directory under the bench's directory or a fresh target user:
     the baseline upload of the account's files (bench/baseline.py, not mailferry); `mbsync`
     pulling the account into a Maildir++ (the yardstick of the backup); `mailferry migrate`
     IMAP -> maildir:DIR, the same command again (a no-op), and maildir:DIR -> IMAP into a fresh
     user (the restore); the same three for mbox:DIR/;
  3. check exit codes, reports and, on disk, every written Maildir (per folder the source's
     messages, flags from the file names and dates from the mtimes), each mbox file (the
     folder's number of `From ` lines: mboxrd quotes every other one) and each restored
     account (messages and dates; flags too when restored from a Maildir: mbox keeps none);
  then the table of medians and issue 15's targets, each marked pass or MISS.
Exit status: 0 when every check passed (a MISS of a target is reported, not a failure), 1 when
any FAIL line was printed.
"""
import argparse
import os
import shutil
import sys
import time

import bench

SOURCE_USERS = ("pop", "imap")
# Target users are <name><rep>: the baseline upload, the restore from Maildir and from mbox.
TARGET_USERS = ("lbase", "lrestore", "lmrestore")

MBSYNC = "mbsync (Maildir++, yardstick)"
BASELINE = bench.BASELINE
BACKUP = "mailferry IMAP -> maildir"
NOOP = "mailferry maildir no-op re-run"
RESTORE = "mailferry maildir -> IMAP"
MBOX_BACKUP = "mailferry IMAP -> mbox"
MBOX_NOOP = "mailferry mbox no-op re-run"
MBOX_RESTORE = "mailferry mbox -> IMAP"
# Each row's yardstick: its ratio column divides by that row of the same rep. A no-op has
# none: its target is in seconds.
YARDSTICK = {MBSYNC: MBSYNC, BACKUP: MBSYNC, MBOX_BACKUP: MBSYNC, BASELINE: BASELINE,
             RESTORE: BASELINE, MBOX_RESTORE: BASELINE}
CASES = [BASELINE, MBSYNC, BACKUP, NOOP, RESTORE, MBOX_BACKUP, MBOX_NOOP, MBOX_RESTORE]

# Issue 15's targets: (case, its limit as a multiple of its yardstick, or None; in seconds, or
# None).
TARGETS = [(BACKUP, 1.0, None), (NOOP, None, 0.2), (RESTORE, 1.1, None)]


def mbsync_config(a, link, near, path):
    """An mbsync configuration for a one-shot backup of the link's IMAP account into `near`,
    as a user would write it: every folder (Patterns *), pulled (Sync Pull, new folders created,
    nothing expunged), arrival dates kept as the files' mtimes (CopyArrivalDate, so both tools
    write the same dates), Maildir++ (SubFolders Maildir++, INBOX the Maildir's root), mbsync's
    defaults otherwise (FSync yes: every message synced, as mailferry does)."""
    if a.transport == "tls":
        tls = f"SSLType IMAPS\nCertificateFile {a.ca}\n"
    else:
        tls = "SSLType None\n"
    with open(path, "w") as f:
        f.write(f"IMAPAccount far\nHost 127.0.0.1\nPort {link['ports'][1]}\n"
                f"User {link['imap_user']}\nPass {a.password}\n{tls}AuthMechs LOGIN\n\n"
                f"IMAPStore far\nAccount far\n\n"
                f"MaildirStore near\nInbox {near}\nSubFolders Maildir++\n\n"
                f"Channel backup\nFar :far:\nNear :near:\nPatterns *\nSync Pull\n"
                f"Create Near\nExpunge None\nCopyArrivalDate yes\nSyncState *\n")
    os.chmod(path, 0o600)


def run_mbsync(a, link, rep, env, limit, fail):
    """mbsync pulling the link's account into a fresh Maildir. Returns (Row, the Maildir)."""
    near = f"{a.work}/mbsync-{rep}"
    config = f"{a.work}/mbsync-{rep}.rc"
    mbsync_config(a, link, near, config)
    log = f"{a.work}/mbsync-{rep}.log"
    before = bench.server_cpu(a.src_dir), bench.server_cpu(a.dst_dir)
    rc, secs, rss, cpu = bench.timed(["mbsync", "-q", "-c", config, "-a"], env, log, limit)
    time.sleep(0.3)  # untimed: lets the source's session end and be reaped
    servers = [bench.server_cpu(d) - b for d, b in zip((a.src_dir, a.dst_dir), before)]
    if rc != 0:
        fail(f"rep {rep}: mbsync exited {rc}; tail of its log:\n{bench.tail(log)}")
    return bench.Row(secs, None, rss, cpu, servers), near


def mbox_counts(directory):
    """{file name: messages} of an mbox directory: mboxrd quotes every `From ` line of a body,
    so each line starting with one begins a message."""
    out = {}
    for name in sorted(os.listdir(directory)):
        path = f"{directory}/{name}"
        if name.startswith(".") or not os.path.isfile(path):
            continue
        with open(path, "rb") as f:
            data = f.read()
        out[name] = data.startswith(b"From ") + data.count(b"\nFrom ")
    return out


def check_mbox(case, rep, link, directory, fail):
    """Each folder of the account is one file of the directory (`/` in its name as `.`) with
    the folder's number of messages."""
    want = {folder.replace("/", "."): n for folder, n in link["per_folder"].items() if n}
    got = mbox_counts(directory)
    if got != want:
        fail(f"rep {rep}: {case}: the mbox files hold {got} messages, the source {want}")


def check_restored(case, rep, link, maildir, fail, flags):
    """A restored account against the source's folders on disk; without `flags`, differences
    in flags are left out (mbox keeps none)."""
    for kind, text in bench.compare_trees(link["tree"], bench.maildir_tree(maildir))[:8]:
        if flags or kind != "flags":
            fail(f"rep {rep}: {case}: {text}")


def run_rep(a, rep, link, env, limit, fail):
    """One repetition of every case. Returns {case: Row}."""
    out = {}
    n = link["count"]
    dst_mail = f"{a.dst_dir}/mail"
    _, src_imap, dst_imap = link["ports"]
    ferry_env = dict(env, MAILFERRY_FROM_PASSWORD=a.password, MAILFERRY_TO_PASSWORD=a.password)
    if a.transport == "plain":
        scheme, security = "imap", ["--allow-plaintext"]
    else:
        scheme, security = "imaps", ["--tls-ca", a.ca]
    account = f"{scheme}://{link['imap_user']}@127.0.0.1:{src_imap}"

    def ferry(case, name, source, target, copied):
        report, log = f"{a.work}/report-{name}-{rep}.json", f"{a.work}/{name}-{rep}.log"
        argv = [a.mailferry, "migrate", "--from", source, "--to", target, "--report", report,
                *security, "--quiet"]
        want = {"source_messages": n, "copied": copied, "already_present": n - copied,
                "failed": 0, "verified": True}
        out[case], _ = bench.run_mailferry(a, case, argv, want, report, log, ferry_env, limit,
                                           fail, rep, None)

    out[BASELINE] = bench.run_baseline(a, link, ["--maildir", link["imap_maildir"]],
                                       f"lbase{rep}", dst_imap, env, limit,
                                       f"{a.work}/base-{rep}.log", fail, rep)
    bench.check_tree(BASELINE, rep, link["tree"], f"{dst_mail}/lbase{rep}/Maildir", fail)
    shutil.rmtree(f"{dst_mail}/lbase{rep}", ignore_errors=True)  # frees the tmpfs

    out[MBSYNC], near = run_mbsync(a, link, rep, env, limit, fail)
    bench.check_tree(MBSYNC, rep, link["tree"], near, fail)
    shutil.rmtree(near, ignore_errors=True)

    backup = f"{a.work}/maildir-{rep}"
    for case, copied in ((BACKUP, n), (NOOP, 0)):
        ferry(case, "maildir" if copied else "maildir-noop", account, f"maildir:{backup}",
              copied)
        bench.check_tree(case, rep, link["tree"], backup, fail)
    ferry(RESTORE, "restore", f"maildir:{backup}",
          f"{scheme}://lrestore{rep}@127.0.0.1:{dst_imap}", n)
    check_restored(RESTORE, rep, link, f"{dst_mail}/lrestore{rep}/Maildir", fail, flags=True)
    shutil.rmtree(backup, ignore_errors=True)
    shutil.rmtree(f"{dst_mail}/lrestore{rep}", ignore_errors=True)

    mbox = f"{a.work}/mbox-{rep}"
    for case, copied in ((MBOX_BACKUP, n), (MBOX_NOOP, 0)):
        ferry(case, "mbox" if copied else "mbox-noop", account, f"mbox:{mbox}/", copied)
        check_mbox(case, rep, link, mbox, fail)
    ferry(MBOX_RESTORE, "mbox-restore", f"mbox:{mbox}/",
          f"{scheme}://lmrestore{rep}@127.0.0.1:{dst_imap}", n)
    check_restored(MBOX_RESTORE, rep, link, f"{dst_mail}/lmrestore{rep}/Maildir", fail,
                   flags=False)
    shutil.rmtree(mbox, ignore_errors=True)
    shutil.rmtree(f"{dst_mail}/lmrestore{rep}", ignore_errors=True)

    for case in CASES:
        bench.print_cpu_line(rep, link["name"], case, out[case])
    return out


def print_table(a, link, reps, floor):
    head = ("case", "messages", "seconds", "msg/s", "MB/s", "peak RSS MiB", "ratio", "to")
    body = []
    n = link["count"]
    for case in CASES:
        rows = [r[case] for r in reps]
        secs = bench.median([r.secs for r in rows])
        nbytes = bench.median([link["bytes"] if r.nbytes is None else r.nbytes for r in rows])
        rss = max(r.rss for r in rows)
        yardstick = YARDSTICK.get(case)
        ratio = yardstick and bench.median([r[case].secs / r[yardstick].secs for r in reps])
        body.append((case, str(n), f"{secs:.3f}" if secs < 1 else f"{secs:.2f}",
                     f"{n / secs:.0f}", f"{nbytes / 1e6 / secs:.1f}" if nbytes else "-",
                     f"{rss:.1f}" if rss > floor + 0.2 else f"<={floor:.1f}",
                     f"{ratio:.2f}" if yardstick else "-",
                     yardstick.split(" (")[0] if yardstick else "-"))
    widths = [max(len(r[k]) for r in [head] + body) for k in range(len(head))]
    transport = "plaintext IMAP" if a.transport == "plain" else "IMAPS"
    print()
    print(f"mailferry local stores: seed {a.seed}, {transport} on 127.0.0.1, {n} messages "
          f"({link['bytes'] / 1e6:.1f} MB) in 6 folders, {a.reps} rep(s)"
          f"{', --connections ' + str(a.connections) if a.connections else ''}, "
          f"mail and backups on {os.path.dirname(a.work)}")
    for k, r in enumerate([head] + body):
        print("  ".join(c.ljust(w) if j in (0, 7) else c.rjust(w)
                        for j, (c, w) in enumerate(zip(r, widths))))
        if k == 0:
            print("  ".join("-" * w for w in widths))
    print("seconds: median of the reps; MB/s: bytes moved (the corpus for the yardsticks, the "
          "report's bytes_copied for mailferry); ratio: median of the\nper-rep ratios to the "
          "row named in \"to\" (mbsync: Maildir++, Sync Pull, CopyArrivalDate, FSync yes; "
          "baseline: bench/baseline.py's\npipelined MULTIAPPEND upload of the account's "
          f"files); peak RSS: largest ru_maxrss over the reps, floor {floor:.1f} MiB.")
    print("\ntargets (issue 15):")
    for case, max_ratio, max_secs in TARGETS:
        rows = [r[case] for r in reps]
        secs = bench.median([r.secs for r in rows])
        if max_ratio is not None:
            ratio = bench.median([r[case].secs / r[YARDSTICK[case]].secs for r in reps])
            ok, text = ratio <= max_ratio, (f"{ratio:.2f}x {YARDSTICK[case].split(' (')[0]} "
                                            f"(at most {max_ratio:g}x)")
        else:
            ok, text = secs <= max_secs, f"{secs:.3f} s (at most {max_secs:g} s)"
        print(f"  {'pass' if ok else 'MISS'}  {case}: {text}")


def main():
    ap = argparse.ArgumentParser(description="the timed part of bench/run.sh --local")
    ap.add_argument("--count", type=int, required=True, help="messages in the IMAP account")
    bench.add_server_args(ap)
    a = ap.parse_args()
    checks = bench.Checks()
    fail = checks.fail
    limit = a.case_timeout
    env = bench.case_env()
    if not shutil.which("mbsync", path=env["PATH"]):
        fail("mbsync is not installed (Debian package isync)")
        return checks.verdict("")
    link = bench.prepare_link(a, env, limit, fail, "loopback", "l", a.count, *SOURCE_USERS)
    if link is None:
        return 1
    _, link["per_folder"] = bench.doveadm_status(a, env, limit, link["imap_user"], ["*"])[:2]
    print(f"== {a.reps} rep(s) of: {', '.join(CASES)}", flush=True)
    reps = [run_rep(a, rep, link, env, limit, fail) for rep in range(1, a.reps + 1)]
    floor = min(bench.timed(["true"], env, f"{a.work}/true.log", 10)[2] for _ in range(3))
    print_table(a, link, reps, floor)
    return checks.verdict(
        "all checks passed: exit codes 0; the yardsticks landed every message; mailferry's "
        "reports: copied == N, then 0, failed 0, verified;\non disk: per folder the source's "
        "messages, flags and dates in every Maildir written (mbsync's too) and every account "
        "restored\n(flags not from mbox), the folder's number of messages in each mbox file")


if __name__ == "__main__":
    sys.exit(main())
