#!/usr/bin/env python3
"""baseline.py — BENCH BASELINE ONLY, NOT PART OF MAILFERRY: a minimal raw IMAP uploader/copier.

It is the yardstick bench/run.sh divides mailferry's times by: the fastest plain way to put a
corpus on an IMAP server, with none of mailferry's work (no Message-ID diff, no verification,
no retries, no error handling worth the name). Three sources:
  upload (default)  reads a Maildir++ from disk (the bench's IMAP source account) and uploads
                    every message into the same folder on the target with its flags and
                    internal date (the file's mtime);
  --copy-port PORT  reads the same from the source IMAP server instead: one connection, LIST,
                    then every folder's EXAMINE + UID FETCH (FLAGS INTERNALDATE BODY.PEEK[])
                    sent at once, each message passed on to the upload as it arrives (no diff,
                    no state);
  --pop3-port PORT  reads a POP3 maildrop into the target's INBOX: USER, PASS, STAT and UIDL
                    in one write (PIPELINING), then every RETR at once, each message passed on
                    to the upload as it arrives (no flags, the server's own internal date). It
                    ends the session by closing the connection, without QUIT: the session never
                    enters the UPDATE state (RFC 1939), so Dovecot marks nothing seen. It still
                    moves the files from new/ to cur/ as the session opens the maildrop
                    (checked: 50 files in new/, none there afterwards, no flag in their names),
                    so give it a maildrop of its own: bench.py gives it hard links of the POP3
                    account's files.
The upload uses --connections target connections (default 1); batch k goes to connection
k mod N, each connection with:
  - LOGIN in plaintext (or over TLS with --tls-ca), pipelined with the CREATE of every folder:
    the setup costs one round trip, not one per command (a folder another connection created
    first answers ALREADYEXISTS, which is fine);
  - RFC 3502 MULTIAPPEND, --batch messages of one folder per APPEND command, each message a
    non-synchronizing literal (RFC 7888 LITERAL+, `{n+}`): no wait for a continuation;
  - pipelining: it never waits for a tagged answer before sending the next batch, only keeps at
    most --window APPEND commands unanswered (a bounded window, so its memory stays bounded).
It assumes a server that offers LITERAL+ and MULTIAPPEND (Dovecot does) and checks that after
LOGIN. Usage (the password comes from the environment, never the command line; the same for
every account in copy mode):
  BASELINE_PASSWORD=… python3 bench/baseline.py --port PORT --user USER
      (--maildir DIR | --copy-port PORT --copy-user USER | --pop3-port PORT --pop3-user USER)
      [--host 127.0.0.1] [--tls-ca FILE] [--connections 1] [--batch 50] [--window 8]
      [--timeout 300]
Prints one JSON line {"messages", "bytes", "commands", "connections", "seconds"} (seconds: from
before the first connect to the last tagged answer; LOGOUT and the interpreter's start-up left
out); exit 0 when every command got OK, 1 otherwise (the failing answers on stderr), 2 on a
usage error.
"""
import argparse
import asyncio
import json
import os
import re
import ssl
import sys
import time

MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
# Maildir info letters (after ":2,") and the IMAP system flags they stand for.
FLAG_LETTERS = {"D": "\\Draft", "F": "\\Flagged", "R": "\\Answered", "S": "\\Seen",
                "T": "\\Deleted"}
LITERAL = re.compile(rb"\{(\d+)\}\r\n$")
FETCH_FLAGS = re.compile(r"FLAGS \(([^)]*)\)")
FETCH_DATE = re.compile(r'INTERNALDATE ("[^"]*")')
# `* LIST (flags) "delimiter" name`, the name quoted or an atom.
LIST_LINE = re.compile(r'^\* LIST \(([^)]*)\) (?:NIL|"(?:[^"\\]|\\.)*") (.*)$')


def quoted(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unquoted(s):
    if s.startswith('"') and s.endswith('"'):
        return re.sub(r"\\(.)", r"\1", s[1:-1])
    return s


def internal_date(ts):
    t = time.gmtime(ts)
    return (f'"{t.tm_mday:02d}-{MONTHS[t.tm_mon - 1]}-{t.tm_year} '
            f'{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"')


class Connection:
    """One IMAP connection: tagged commands whose answers are futures, read by one task;
    untagged responses (with their literals) go to `on_untagged`, awaited, so a slow consumer
    holds the reading back; `on_tagged(tag)` is called as each tagged answer is read, before
    anything after it (a future's waiter would run too late to tell responses apart)."""

    def __init__(self, reader, writer, on_untagged=None, on_tagged=None):
        self.reader, self.writer = reader, writer
        self.pending = {}
        self.on_untagged = on_untagged
        self.on_tagged = on_tagged
        self.reading = None

    @classmethod
    async def open(cls, host, port, ctx, on_untagged=None, on_tagged=None):
        reader, writer = await asyncio.open_connection(host, port, ssl=ctx,
                                                       server_hostname=host if ctx else None)
        greeting = await reader.readline()
        if not greeting.startswith(b"* OK"):
            raise RuntimeError(f"greeting: {greeting!r}")
        conn = cls(reader, writer, on_untagged, on_tagged)
        conn.reading = asyncio.ensure_future(conn.read_loop())
        return conn

    async def read_loop(self):
        while True:
            line = await self.reader.readline()
            if not line:
                return
            literals = []
            while m := LITERAL.search(line):
                literals.append(await self.reader.readexactly(int(m.group(1))))
                line = line + b"\0" + await self.reader.readline()
            text = line.decode(errors="replace").rstrip("\r\n")
            tag, _, rest = text.partition(" ")
            if tag in self.pending:
                if self.on_tagged:
                    self.on_tagged(tag)
                self.pending.pop(tag).set_result(rest)
            elif tag == "*" and self.on_untagged:
                await self.on_untagged(text, literals)

    def send(self, tag, data):
        """Writes one command (no wait); returns the future of its tagged answer's text."""
        self.pending[tag] = asyncio.get_running_loop().create_future()
        self.writer.write(data)
        return self.pending[tag]

    async def close(self):
        self.writer.write(b"Z LOGOUT\r\n")
        try:
            await self.writer.drain()
            await asyncio.wait_for(self.reading, 5)
        except (asyncio.TimeoutError, OSError):
            self.reading.cancel()
        self.writer.close()


def maildir_source(maildir):
    """The upload mode's source: (IMAP folder names, async iterator of (folder, flags, date,
    bytes)) from a Maildir++: INBOX is the Maildir itself, folder A/B lives in .A.B (names
    already in modified UTF-7, as IMAP wants them)."""
    folders = [("INBOX", maildir)] + [
        (d[1:].replace(".", "/"), os.path.join(maildir, d)) for d in sorted(os.listdir(maildir))
        if d.startswith(".") and os.path.isdir(os.path.join(maildir, d, "cur"))]

    async def messages():
        for name, path in folders:
            for sub in ("cur", "new"):
                for f in sorted(os.listdir(os.path.join(path, sub))):
                    info = f.rsplit(":2,", 1)[1] if ":2," in f else ""
                    flags = " ".join(FLAG_LETTERS[c] for c in sorted(info) if c in FLAG_LETTERS)
                    full = os.path.join(path, sub, f)
                    with open(full, "rb") as fh:
                        data = fh.read()
                    yield name, flags, internal_date(os.stat(full).st_mtime), data

    return [name for name, _ in folders], messages()


async def server_source(a, ctx, password, failures):
    """The copy mode's source: (folder names, async iterator of messages) read from the source
    server over one connection. LOGIN + LIST cost one round trip; then every folder's EXAMINE
    and UID FETCH go out at once and the messages stream back in folder order."""
    folders = []
    queue = asyncio.Queue(maxsize=2 * a.batch)  # bounded: a slow target holds the source back
    current = {"folder": None}

    def tagged(tag):
        # Dovecot runs pipelined commands in order: folder k's messages come after EXAMINE k's
        # answer (E<k>) and before FETCH k's.
        if tag.startswith("E"):
            current["folder"] = folders[int(tag[1:])]

    async def untagged(text, literals):
        if text.startswith("* LIST "):
            m = LIST_LINE.match(text)
            if m and "\\noselect" not in m.group(1).lower() \
                    and "\\nonexistent" not in m.group(1).lower():
                folders.append(unquoted(m.group(2)))
        elif " FETCH " in text and literals:
            flags = FETCH_FLAGS.search(text)
            flags = " ".join(f for f in (flags.group(1).split() if flags else [])
                             if f.lower() != "\\recent")
            date = FETCH_DATE.search(text)
            await queue.put((current["folder"], flags, date.group(1) if date else "",
                             literals[0]))

    conn = await Connection.open(a.host, a.copy_port, ctx, untagged, tagged)
    login = conn.send("L", f"L LOGIN {quoted(a.copy_user)} {quoted(password)}\r\n".encode())
    listed = conn.send("S", b'S LIST "" "*"\r\n')
    await conn.writer.drain()
    for answer in (await login, await listed):
        if not answer.startswith("OK"):
            failures.append(f"source: {answer}")
    answers = []
    for k, folder in enumerate(folders):
        answers.append(conn.send(f"E{k}", f"E{k} EXAMINE {quoted(folder)}\r\n".encode()))
        answers.append(conn.send(f"F{k}", f"F{k} UID FETCH 1:* (FLAGS INTERNALDATE "
                                          f"BODY.PEEK[])\r\n".encode()))
    await conn.writer.drain()

    async def follow():
        for answer in answers:
            if not (rest := await answer).startswith("OK"):
                failures.append(f"source: {rest}")
        await queue.put(None)

    async def messages():
        following = asyncio.ensure_future(follow())
        while (item := await queue.get()) is not None:
            yield item
        await following
        await conn.close()

    return list(folders), messages()


async def pop3_source(a, ctx, password):
    """The POP3 mode's source: (["INBOX"], async iterator of messages) read over one
    connection. USER, PASS, STAT and UIDL cost one round trip; then every RETR goes out at once
    and the messages stream back in order."""
    reader, writer = await asyncio.open_connection(a.host, a.pop3_port, ssl=ctx, limit=1 << 26,
                                                   server_hostname=a.host if ctx else None)
    if not (await reader.readline()).startswith(b"+OK"):
        raise RuntimeError("POP3 greeting")
    writer.write(f"USER {a.pop3_user}\r\nPASS {password}\r\nSTAT\r\nUIDL\r\n".encode())
    await writer.drain()
    answers = [await reader.readline() for _ in range(3)]
    for what, answer in zip(("USER", "PASS", "STAT"), answers):
        if not answer.startswith(b"+OK"):
            raise RuntimeError(f"POP3 {what}: {answer.decode(errors='replace').strip()}")
    count = int(answers[2].split()[1])
    await reader.readuntil(b"\r\n.\r\n")  # the UIDL listing, unused
    writer.write(b"".join(f"RETR {n}\r\n".encode() for n in range(1, count + 1)))
    await writer.drain()

    async def messages():
        for n in range(1, count + 1):
            status = await reader.readline()
            if not status.startswith(b"+OK"):
                raise RuntimeError(f"POP3 RETR {n}: {status.decode(errors='replace').strip()}")
            # Every message ends with CRLF, so CRLF.CRLF ends it; then undo the dot-stuffing.
            data = (await reader.readuntil(b"\r\n.\r\n"))[:-3].replace(b"\r\n..", b"\r\n.")
            yield "INBOX", "", "", data[1:] if data.startswith(b"..") else data
        # No QUIT: see the module's docstring.
        writer.close()

    return ["INBOX"], messages()


async def run(a, password):
    # Timed from here, the connects included, as mailferry's wall time includes its own.
    start = time.monotonic()
    ctx = ssl.create_default_context(cafile=a.tls_ca) if a.tls_ca else None
    failures = []
    target_opening = asyncio.gather(*(Connection.open(a.host, a.port, ctx)
                                      for _ in range(a.connections)))
    if a.copy_port:
        folders, messages = await server_source(a, ctx, password, failures)
    elif a.pop3_port:
        folders, messages = await pop3_source(a, ctx, password)
    else:
        folders, messages = maildir_source(a.maildir)
    targets = await target_opening
    windows = [asyncio.Semaphore(a.window) for _ in targets]

    # Setup, pipelined: on each connection LOGIN and every CREATE in one write.
    setup = []
    for n, target in enumerate(targets):
        setup.append(target.send("L", f"L LOGIN {quoted(a.user)} {quoted(password)}\r\n"
                                 .encode()))
        for k, folder in enumerate(f for f in folders if f != "INBOX"):
            setup.append(target.send(f"C{k}", f"C{k} CREATE {quoted(folder)}\r\n".encode()))
        await target.writer.drain()

    done = []
    counts = {"messages": 0, "bytes": 0}

    async def send_batch(batch):
        which = len(done) % len(targets)
        target, window = targets[which], windows[which]
        await window.acquire()
        parts = [f"A{len(done)} APPEND {quoted(batch[0][0])}".encode()]
        for _, flags, date, data in batch:
            parts.append(f" ({flags}){' ' + date if date else ''} {{{len(data)}+}}\r\n"
                         .encode())
            parts.append(data)
        parts.append(b"\r\n")
        answer = target.send(f"A{len(done)}", b"".join(parts))
        answer.add_done_callback(lambda _: window.release())
        done.append(answer)
        await target.writer.drain()

    batch, batch_bytes = [], 0
    async for message in messages:
        if batch and (message[0] != batch[0][0] or len(batch) == a.batch
                      or batch_bytes >= a.max_batch_bytes):
            await send_batch(batch)
            batch, batch_bytes = [], 0
        batch.append(message)
        batch_bytes += len(message[3])
        counts["messages"] += 1
        counts["bytes"] += len(message[3])
    if batch:
        await send_batch(batch)

    for answer in setup:
        rest = await answer
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
    await asyncio.gather(*(target.close() for target in targets))
    return dict(counts, commands=len(done), connections=len(targets),
                seconds=round(seconds, 6)), failures


def main():
    ap = argparse.ArgumentParser(description="bench baseline (not part of mailferry): pipelined "
                                             "MULTIAPPEND upload of a Maildir++ or an account")
    source = ap.add_mutually_exclusive_group(required=True)
    source.add_argument("--maildir", help="upload this Maildir++")
    source.add_argument("--copy-port", type=int, help="copy from the IMAP server on this port")
    source.add_argument("--pop3-port", type=int,
                        help="copy the maildrop of the POP3 server on this port into INBOX")
    ap.add_argument("--copy-user", help="the source account (with --copy-port)")
    ap.add_argument("--pop3-user", help="the source account (with --pop3-port)")
    ap.add_argument("--connections", type=int, default=1,
                    help="target connections; batch k goes to connection k mod N")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True, help="the target's IMAP port")
    ap.add_argument("--user", required=True, help="the target account")
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
    if a.copy_port and not a.copy_user:
        ap.error("--copy-port needs --copy-user")
    if a.pop3_port and not a.pop3_user:
        ap.error("--pop3-port needs --pop3-user")
    if a.connections < 1:
        ap.error("--connections takes a positive integer")
    try:
        result, failures = asyncio.run(asyncio.wait_for(run(a, password), a.timeout))
    except (OSError, RuntimeError, asyncio.TimeoutError, asyncio.IncompleteReadError,
            ssl.SSLError) as e:
        print(f"baseline: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result), flush=True)
    for f in failures:
        print(f"baseline: server answered: {f}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
