#!/usr/bin/env python3
"""round_trips.py — the round trips a mailferry run waited for, per phase (bench only).

Reads a `mailferry -vvv` protocol trace (stderr: lines `[#CONN HOST:PORT] C: …` for what
mailferry sent and `S: …` for what it read back) and counts, per connection, the times it waited
for an answer: each time the server spoke after mailferry had (the mirror image of the relay's
"turns"), plus the wait for the greeting. A burst of pipelined commands answered together is one
wait, as on the wire. Each wait is put in the phase of the last command sent before it (what it
waited for):
  setup     greeting, CAPA/CAPABILITY, STLS/STARTTLS, AUTH/AUTHENTICATE/LOGIN/USER/PASS, ID,
            ENABLE, NAMESPACE, IMAP LIST: connecting and learning the folders
  index     POP3 STAT/LIST/UIDL/TOP; IMAP SELECT/EXAMINE/STATUS and the header FETCH before the
            first upload: what each side holds
  plan      CREATE, GETQUOTAROOT: what the plan asks of the target before copying
  transfer  RETR, APPEND, a FETCH of message bodies, and a lane's SELECT/EXAMINE during the copy
  verify    the target's SELECT/EXAMINE/FETCH after the last upload was answered
  after     STORE, EXPUNGE, DELE (a mirror's flag and deletion sync, POP3 deletion)
The goodbye (QUIT, LOGOUT) is not waited for. Sides: the target is the connections to
--target-port, the source every other.

Usage: python3 bench/round_trips.py --target-port PORT [--rtt-ms R] TRACE
Prints one line per phase and side; as a module, `count(lines, target_port)` returns
{phase: {"source": n, "target": n}}.
"""
import argparse
import re
import sys

PHASES = ("setup", "index", "plan", "transfer", "verify", "after")
LINE = re.compile(r"^\[#(\d+) [^\]]*:(\d+)\] (C|S): ?(.*)$")
POP3 = {"CAPA": "setup", "STLS": "setup", "AUTH": "setup", "USER": "setup", "PASS": "setup",
        "APOP": "setup", "STAT": "index", "LIST": "index", "UIDL": "index", "TOP": "index",
        "RETR": "transfer", "DELE": "after", "RSET": "after", "NOOP": "after"}
IMAP = {"CAPABILITY": "setup", "STARTTLS": "setup", "AUTHENTICATE": "setup", "LOGIN": "setup",
        "ID": "setup", "ENABLE": "setup", "NAMESPACE": "setup", "LIST": "setup",
        "LSUB": "setup", "COMPRESS": "setup", "CREATE": "plan", "GETQUOTAROOT": "plan",
        "APPEND": "transfer", "STORE": "after", "EXPUNGE": "after", "UID STORE": "after",
        "UID EXPUNGE": "after"}
# Whose phase depends on when: before the first upload they index, during the copy a lane
# opens its folder, after the last upload's answer the target is verified.
OPENING = ("SELECT", "EXAMINE", "STATUS", "UNSELECT", "CLOSE", "FETCH", "UID FETCH", "NOOP",
           "CHECK")
GOODBYE = ("QUIT", "LOGOUT")


def command_of(text, imap):
    """The command name of a sent line (IMAP: after the tag; `UID X` as one name)."""
    words = text.split()
    if imap and len(words) > 1:
        words = words[1:]
    if not words:
        return ""
    name = words[0].upper()
    if name == "UID" and len(words) > 1:
        name = f"UID {words[1].upper()}"
    return name


def phase_of(name, text, imap, target, copying, copied):
    if name in GOODBYE:
        return None
    fixed = (IMAP if imap else POP3).get(name)
    if fixed:
        return fixed
    if name in OPENING:
        if "BODY.PEEK[]" in text.upper() or "BODY[]" in text.upper():
            return "transfer"
        if target and copied:
            return "verify"
        return "transfer" if copying else "index"
    return "setup" if not copying else "transfer"


def count(lines, target_port):
    """{phase: {"source": waits, "target": waits}} of one trace."""
    out = {p: {"source": 0, "target": 0} for p in PHASES}
    conns = {}
    copying = False  # an upload or body fetch was sent
    uploads_owed = 0  # APPENDs not answered yet (target-wide)
    copied = False  # every APPEND sent so far was answered
    for line in lines:
        m = LINE.match(line.rstrip("\n"))
        if not m:
            continue
        conn, port, who, text = m.group(1), int(m.group(2)), m.group(3), m.group(4)
        side = "target" if port == target_port else "source"
        c = conns.setdefault(conn, {"imap": None, "last": "setup", "spoke": False,
                                    "waiting": True, "side": side, "appends": []})
        if who == "S":
            if c["imap"] is None:
                c["imap"] = not text.startswith("+OK")
            if c["waiting"] and c["last"]:
                out[c["last"]][side] += 1
            c["waiting"] = False
            if c["imap"] and c["appends"]:
                tag = text.split(" ", 1)[0]
                if tag in c["appends"]:
                    c["appends"].remove(tag)
                    uploads_owed -= 1
                    copied = uploads_owed == 0
            continue
        imap = bool(c["imap"])
        name = command_of(text, imap)
        if name == "APPEND":
            c["appends"].append(text.split(" ", 1)[0])
            uploads_owed += 1
            copied = False
        if name in ("APPEND", "RETR") or (name in OPENING and "BODY.PEEK[]" in text.upper()):
            copying = True
        phase = phase_of(name, text, imap, side == "target", copying, copied)
        c["last"] = phase
        c["waiting"] = phase is not None
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target-port", type=int, required=True)
    ap.add_argument("--rtt-ms", type=float, help="also print the seconds the waits cost")
    ap.add_argument("trace")
    a = ap.parse_args()
    with open(a.trace, errors="replace") as f:
        phases = count(f, a.target_port)
    for phase, sides in phases.items():
        print(f"{phase:<9} source {sides['source']:>4}  target {sides['target']:>4}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
