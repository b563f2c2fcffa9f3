#!/usr/bin/env python3
"""latency_relay.py — a TCP relay on 127.0.0.1 that adds a fixed one-way delay (bench only).

This kernel has no sch_netem, so `tc netem` cannot slow loopback down; bench/run.sh puts this
relay between mailferry (or the baseline) and each Dovecot port instead.

Usage:
  python3 bench/latency_relay.py --delay-ms D --target PORT [--target PORT ...]
                                 [--stats FILE] [--trace FILE] [--lifetime S]
      For every --target, listens on a free port of 127.0.0.1 and prints one line
      "relay LISTEN_PORT -> TARGET_PORT" on stdout (then "ready"); every accepted connection
      gets its own connection to 127.0.0.1:TARGET_PORT.
  python3 bench/latency_relay.py --self-test [--delay-ms D]
      Checks itself (ping-pong round trip ~= 2 x D, bulk throughput not capped by the delay)
      and exits 1 when a check fails.
  python3 bench/latency_relay.py --timeline TRACE
      Prints a --trace file as a timeline, a line per burst (chunks of one connection and
      direction less than 10 ms apart): where a client waits for answers one at a time.

How the delay is made: each direction has a reader and a sender. The reader stamps every chunk
with its arrival time and queues it, then reads on at once; the sender writes the chunk out
when arrival + D has come. So a burst of pipelined commands arrives D later as a burst, and a
round trip costs 2 x D, which is what a real link of RTT 2 x D does. (A relay that slept D
after each read would add D per chunk, not per round trip, and punish pipelining.) The queue
is bounded (--max-buffer per direction): past it the reader stops reading and TCP's own flow
control holds the sender back. A half-close (EOF) and a reset travel through the queue too,
so they are passed on D later. TCP_NODELAY on both legs: the delay is ours, not Nagle's.

--stats FILE gets one JSON line per finished connection: bytes, chunks and "turns" per
direction (a turn = the client sends again after the server has spoken since its last chunk;
for a request/answer protocol that is the number of round trips the client waited for, give or
take pipelining). --trace FILE gets one line per chunk: seconds since the relay started,
connection, target port, direction (up: client to server), bytes.
--lifetime S (default 3600) ends the relay after S seconds whatever happens, and it also ends
when its parent process goes away: a bench killed outright leaves no relay behind.
"""
import argparse
import asyncio
import collections
import json
import os
import socket
import statistics
import sys
import time

CHUNK = 256 * 1024


class Stats:
    """Counters of one relayed connection, written to --stats when it ends."""

    def __init__(self, conn_id, listen_port, target_port):
        self.conn_id = conn_id
        self.listen_port = listen_port
        self.target_port = target_port
        self.opened = time.monotonic()
        self.bytes = {"up": 0, "down": 0}
        self.chunks = {"up": 0, "down": 0}
        self.turns = 0
        self.last_dir = None

    def saw(self, direction, n):
        self.bytes[direction] += n
        self.chunks[direction] += 1
        if direction == "up" and self.last_dir == "down":
            self.turns += 1
        self.last_dir = direction

    def line(self):
        return json.dumps({"conn": self.conn_id, "listen": self.listen_port,
                           "target": self.target_port, "opened": round(self.opened, 6),
                           "seconds": round(time.monotonic() - self.opened, 6),
                           "up_bytes": self.bytes["up"], "down_bytes": self.bytes["down"],
                           "up_chunks": self.chunks["up"], "down_chunks": self.chunks["down"],
                           "turns": self.turns})


def nodelay(writer):
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def pump(reader, writer, delay, max_buffer, on_chunk):
    """Moves one direction: reads and queues without waiting for the delay, writes each chunk
    when its time has come. Ends after passing on EOF or an error (as EOF, then a close)."""
    queue = collections.deque()
    queued = 0
    arrived = asyncio.Event()
    room = asyncio.Event()
    room.set()

    async def read_side():
        nonlocal queued
        while True:
            await room.wait()
            try:
                data = await reader.read(CHUNK)
            except (ConnectionError, OSError):
                data = b""
            queue.append((time.monotonic() + delay, data))
            arrived.set()
            if not data:
                return
            on_chunk(len(data))
            queued += len(data)
            if queued > max_buffer:
                room.clear()

    async def send_side():
        nonlocal queued
        while True:
            while not queue:
                arrived.clear()
                await arrived.wait()
            due, data = queue.popleft()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                try:
                    if writer.can_write_eof():
                        writer.write_eof()
                    await writer.drain()
                except (ConnectionError, OSError):
                    pass
                return
            try:
                writer.write(data)
                await writer.drain()
            except (ConnectionError, OSError):
                return
            queued -= len(data)
            if queued <= max_buffer:
                room.set()

    reading = asyncio.ensure_future(read_side())
    try:
        await send_side()
    finally:
        reading.cancel()


class Relay:
    def __init__(self, delay, max_buffer, stats_file, trace_file):
        self.delay = delay
        self.max_buffer = max_buffer
        self.stats_file = stats_file
        self.trace_file = trace_file
        self.next_id = 0
        self.start = time.monotonic()

    async def serve(self, target_port):
        async def handle(c_reader, c_writer):
            self.next_id += 1
            stats = Stats(self.next_id, c_writer.get_extra_info("sockname")[1], target_port)
            try:
                s_reader, s_writer = await asyncio.open_connection("127.0.0.1", target_port)
            except OSError:
                c_writer.close()
                return
            nodelay(c_writer)
            nodelay(s_writer)

            def seen(direction):
                def note(n):
                    stats.saw(direction, n)
                    if self.trace_file:
                        self.trace_file.write(f"{time.monotonic() - self.start:.6f} "
                                              f"{stats.conn_id} {target_port} {direction} "
                                              f"{n}\n")
                return note

            try:
                await asyncio.gather(
                    pump(c_reader, s_writer, self.delay, self.max_buffer, seen("up")),
                    pump(s_reader, c_writer, self.delay, self.max_buffer, seen("down")))
            finally:
                for w in (c_writer, s_writer):
                    w.close()
                if self.stats_file:
                    self.stats_file.write(stats.line() + "\n")
                    self.stats_file.flush()
                if self.trace_file:
                    self.trace_file.flush()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        return server, server.sockets[0].getsockname()[1]


async def watch_parent(lifetime):
    """The safety net: ends the relay when its parent is gone or after `lifetime` seconds."""
    parent = os.getppid()
    end = time.monotonic() + lifetime
    while time.monotonic() < end and os.getppid() == parent:
        await asyncio.sleep(0.5)


async def run(args):
    stats = open(args.stats, "a", buffering=1) if args.stats else None
    trace = open(args.trace, "a") if args.trace else None
    relay = Relay(args.delay_ms / 1000, args.max_buffer, stats, trace)
    servers = []
    for target in args.target:
        server, port = await relay.serve(target)
        servers.append(server)
        print(f"relay {port} -> {target}", flush=True)
    print("ready", flush=True)
    await watch_parent(args.lifetime)
    for server in servers:
        server.close()
    if trace:
        trace.close()


def timeline(path):
    """--timeline: a trace as bursts, times from its first line."""
    bursts = []
    with open(path) as f:
        for line in f:
            t, conn, port, direction, n = line.split()
            t, n = float(t), int(n)
            last = bursts[-1] if bursts else None
            if last and last["key"] == (conn, direction) and t - last["end"] < 0.010:
                last["end"], last["bytes"], last["chunks"] = t, last["bytes"] + n, \
                    last["chunks"] + 1
            else:
                bursts.append({"key": (conn, direction), "port": port, "start": t, "end": t,
                               "bytes": n, "chunks": 1})
    t0 = bursts[0]["start"] if bursts else 0
    for b in bursts:
        conn, direction = b["key"]
        print(f"{b['start'] - t0:8.3f} s  conn {conn:>4} (port {b['port']})  {direction:<4} "
              f"{b['bytes']:>10} bytes in {b['chunks']} chunk(s)")


# ---- self-test --------------------------------------------------------------------------------

async def self_test(args):
    delay = args.delay_ms / 1000
    failures = []

    async def echo(reader, writer):
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def sink(reader, writer):
        total = 0
        while data := await reader.read(CHUNK):
            total += len(data)
        writer.write(str(total).encode())
        await writer.drain()
        writer.close()

    echo_server = await asyncio.start_server(echo, "127.0.0.1", 0)
    sink_server = await asyncio.start_server(sink, "127.0.0.1", 0)
    relay = Relay(delay, args.max_buffer, None, None)
    echo_relay, echo_port = await relay.serve(echo_server.sockets[0].getsockname()[1])
    sink_relay, sink_port = await relay.serve(sink_server.sockets[0].getsockname()[1])

    # Ping-pong: one byte, wait for it to come back, 50 times.
    reader, writer = await asyncio.open_connection("127.0.0.1", echo_port)
    nodelay(writer)
    rtts = []
    for _ in range(50):
        t = time.monotonic()
        writer.write(b"x")
        await writer.drain()
        await reader.readexactly(1)
        rtts.append(time.monotonic() - t)
    writer.close()
    rtt = statistics.median(rtts)
    ok = 2 * delay <= rtt <= 2 * delay + 0.005
    print(f"ping-pong: median round trip {rtt * 1000:.2f} ms (min {min(rtts) * 1000:.2f}, "
          f"max {max(rtts) * 1000:.2f}) for a one-way delay of {args.delay_ms} ms: "
          f"{'ok' if ok else 'FAIL'}", flush=True)
    if not ok:
        failures.append("ping-pong")

    # Pipelining: 20 one-byte requests sent back to back come back after one round trip.
    reader, writer = await asyncio.open_connection("127.0.0.1", echo_port)
    nodelay(writer)
    t = time.monotonic()
    for _ in range(20):
        writer.write(b"y")
        await writer.drain()
        await asyncio.sleep(0.001)
    await reader.readexactly(20)
    burst = time.monotonic() - t
    writer.close()
    ok = burst < 2 * delay + 0.040
    print(f"pipelined: 20 requests 1 ms apart answered in {burst * 1000:.1f} ms (not 20 round "
          f"trips): {'ok' if ok else 'FAIL'}", flush=True)
    if not ok:
        failures.append("pipelining")

    # Bulk: 64 MiB one way; the delay adds ~D once, not per chunk.
    size = 64 * 1024 * 1024
    block = b"z" * (1024 * 1024)
    reader, writer = await asyncio.open_connection("127.0.0.1", sink_port)
    t = time.monotonic()
    for _ in range(size // len(block)):
        writer.write(block)
        await writer.drain()
    writer.write_eof()
    got = int(await reader.read())
    secs = time.monotonic() - t
    writer.close()
    rate = size / secs / 1e6
    ok = got == size and rate >= 50
    bound = f"{args.max_buffer / delay / 1e6:.0f} MB/s" if delay else "nothing"
    print(f"bulk: {got / 1e6:.0f} MB in {secs:.2f} s through the relay = {rate:.0f} MB/s "
          f"(the queue bounds it at {bound}): {'ok' if ok else 'FAIL'}", flush=True)
    if not ok:
        failures.append("bulk")

    for s in (echo_relay, sink_relay, echo_server, sink_server):
        s.close()
    return 1 if failures else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--delay-ms", type=float, default=25, help="one-way delay (RTT = 2x)")
    ap.add_argument("--target", type=int, action="append", default=[],
                    help="a port on 127.0.0.1 to relay to (repeatable)")
    ap.add_argument("--max-buffer", type=int, default=8 * 1024 * 1024,
                    help="bytes queued per direction before reading pauses")
    ap.add_argument("--stats", help="append one JSON line per finished connection")
    ap.add_argument("--trace", help="append one line per chunk")
    ap.add_argument("--lifetime", type=float, default=3600, help="seconds before it ends itself")
    ap.add_argument("--self-test", action="store_true")
    ap.add_argument("--timeline", metavar="TRACE", help="print a --trace file as a timeline")
    args = ap.parse_args()
    if args.timeline:
        timeline(args.timeline)
        return 0
    if args.self_test:
        return asyncio.run(self_test(args))
    if not args.target:
        ap.error("give at least one --target PORT, or --self-test")
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
