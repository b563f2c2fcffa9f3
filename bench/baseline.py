#!/usr/bin/env python3
"""baseline.py — BENCH BASELINE ONLY, NOT PART OF MAILFERRY: a minimal raw IMAP uploader.

It is the yardstick bench/run.sh divides mailferry's times by: the fastest plain way to put a
corpus on an IMAP server over one connection, with none of mailferry's work (no source server,
no Message-ID diff, no verification, no retries, no error handling worth the name). It reads a
Maildir++ from disk (the bench's IMAP source account) and uploads every message into the same
folder on the target with its flags and internal date (the file's mtime), using:
  - LOGIN in plaintext (or over TLS with --tls-ca), pipelined with the CREATE of every folder:
    the setup costs one round trip, not one per command;
  - RFC 3502 MULTIAPPEND, --batch messages of one folder per APPEND command, each message a
    non-synchronizing literal (RFC 7888 LITERAL+, `{n+}`): no wait for a continuation;
  - pipelining: it never waits for a tagged answer before sending the next batch, only keeps at
    most --window APPEND commands unanswered (a bounded window, so its memory stays bounded).
It assumes a server that offers LITERAL+ and MULTIAPPEND (Dovecot does) and checks that after
LOGIN. Usage (the password comes from the environment, never the command line):
  BASELINE_PASSWORD=… python3 bench/baseline.py --maildir DIR --port PORT --user USER
      [--host 127.0.0.1] [--tls-ca FILE] [--batch 50] [--window 8] [--timeout 300]
Prints one JSON line {"messages", "bytes", "commands", "seconds"} (seconds: from before the
connect to the last tagged answer; LOGOUT and the interpreter's start-up left out); exit 0 when every command
got OK, 1 otherwise (the failing answers on stderr), 2 on a usage error.
"""
import argparse
import asyncio
import json
import os
import ssl
import sys
import time

MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
# Maildir info letters (after ":2,") and the IMAP system flags they stand for.
FLAG_LETTERS = {"D": "\\Draft", "F": "\\Flagged", "R": "\\Answered", "S": "\\Seen",
                "T": "\\Deleted"}


def quoted(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def internal_date(ts):
    t = time.gmtime(ts)
    return (f'"{t.tm_mday:02d}-{MONTHS[t.tm_mon - 1]}-{t.tm_year} '
            f'{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"')


def maildir_messages(maildir):
    """[(IMAP folder name, path, flags, mtime)] of a Maildir++: INBOX is the Maildir itself,
    folder A/B lives in .A.B (names already in modified UTF-7, as IMAP wants them)."""
    folders = [("INBOX", maildir)] + [
        (d[1:].replace(".", "/"), os.path.join(maildir, d)) for d in sorted(os.listdir(maildir))
        if d.startswith(".") and os.path.isdir(os.path.join(maildir, d, "cur"))]
    out = []
    for name, path in folders:
        for sub in ("cur", "new"):
            for f in sorted(os.listdir(os.path.join(path, sub))):
                info = f.rsplit(":2,", 1)[1] if ":2," in f else ""
                flags = " ".join(FLAG_LETTERS[c] for c in sorted(info) if c in FLAG_LETTERS)
                full = os.path.join(path, sub, f)
                out.append((name, full, flags, os.stat(full).st_mtime))
    return [f for f, _ in folders], out


def batches(messages, size, max_bytes):
    """Runs of at most `size` messages (and about `max_bytes`) of one folder."""
    batch, nbytes = [], 0
    for m in messages:
        if batch and (m[0] != batch[0][0] or len(batch) == size or nbytes >= max_bytes):
            yield batch
            batch, nbytes = [], 0
        batch.append(m)
        nbytes += os.path.getsize(m[1])
    if batch:
        yield batch


async def upload(a, password):
    # Timed from here, the connect included, as mailferry's wall time includes its own.
    start = time.monotonic()
    folders, messages = maildir_messages(a.maildir)
    ctx = None
    if a.tls_ca:
        ctx = ssl.create_default_context(cafile=a.tls_ca)
    reader, writer = await asyncio.open_connection(a.host, a.port, ssl=ctx,
                                                   server_hostname=a.host if ctx else None)
    greeting = await reader.readline()
    if not greeting.startswith(b"* OK"):
        raise RuntimeError(f"greeting: {greeting!r}")

    answers = {}  # tag -> the tagged line
    pending = {}  # tag -> future resolved by the reader
    window = asyncio.Semaphore(a.window)
    failures = []

    async def read_answers():
        while True:
            line = await reader.readline()
            if not line:
                return
            tag, _, rest = line.decode(errors="replace").rstrip("\r\n").partition(" ")
            if tag in pending:
                answers[tag] = rest
                pending.pop(tag).set_result(rest)

    def send(tag, data):
        pending[tag] = asyncio.get_running_loop().create_future()
        writer.write(data)
        return pending[tag]

    reading = asyncio.ensure_future(read_answers())
    # Setup, pipelined: LOGIN and every CREATE in one write.
    setup = [send("L", f"L LOGIN {quoted(a.user)} {quoted(password)}\r\n".encode())]
    for k, folder in enumerate(f for f in folders if f != "INBOX"):
        setup.append(send(f"C{k}", f"C{k} CREATE {quoted(folder)}\r\n".encode()))
    await writer.drain()

    done = []
    sent_bytes = 0
    for k, batch in enumerate(batches(messages, a.batch, a.max_batch_bytes)):
        await window.acquire()
        parts = [f"A{k} APPEND {quoted(batch[0][0])}".encode()]
        for _, path, flags, mtime in batch:
            with open(path, "rb") as f:
                data = f.read()
            sent_bytes += len(data)
            parts.append(f" ({flags}) {internal_date(mtime)} {{{len(data)}+}}\r\n".encode())
            parts.append(data)
        parts.append(b"\r\n")
        answer = send(f"A{k}", b"".join(parts))
        answer.add_done_callback(lambda _: window.release())
        done.append(answer)
        await writer.drain()

    for tag_answer in setup:
        rest = await tag_answer
        # A folder the server already has is fine (ALREADYEXISTS); anything else is not.
        if not rest.startswith("OK") and "ALREADYEXISTS" not in rest:
            failures.append(rest)
    login = await setup[0]
    caps = login.upper()
    if login.startswith("OK") and not ("MULTIAPPEND" in caps and "LITERAL+" in caps):
        failures.append("the server did not announce MULTIAPPEND and LITERAL+ after LOGIN")
    for answer in done:
        rest = await answer
        if not rest.startswith("OK"):
            failures.append(rest)
    seconds = time.monotonic() - start
    writer.write(b"Z LOGOUT\r\n")
    await writer.drain()
    try:
        await asyncio.wait_for(reading, 5)
    except asyncio.TimeoutError:
        reading.cancel()
    writer.close()
    return {"messages": len(messages), "bytes": sent_bytes, "commands": len(done),
            "seconds": round(seconds, 6)}, failures


def main():
    ap = argparse.ArgumentParser(description="bench baseline (not part of mailferry): pipelined "
                                             "MULTIAPPEND upload of a Maildir++")
    ap.add_argument("--maildir", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--tls-ca", help="speak TLS from the start, trusting this PEM")
    ap.add_argument("--batch", type=int, default=50, help="messages per MULTIAPPEND command")
    ap.add_argument("--max-batch-bytes", type=int, default=16 * 1024 * 1024,
                    help="also end a batch once it holds this many bytes")
    ap.add_argument("--window", type=int, default=8, help="APPEND commands left unanswered")
    ap.add_argument("--timeout", type=float, default=300)
    a = ap.parse_args()
    password = os.environ.get("BASELINE_PASSWORD")
    if password is None:
        ap.error("set BASELINE_PASSWORD")
    try:
        result, failures = asyncio.run(asyncio.wait_for(upload(a, password), a.timeout))
    except (OSError, RuntimeError, asyncio.TimeoutError, ssl.SSLError) as e:
        print(f"baseline: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result), flush=True)
    for f in failures:
        print(f"baseline: server answered: {f}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
