#!/usr/bin/env python3
"""The headers-only attack of issue 18, against a release server it starts.

N connections each open S Register calls whose request headers are sent and
whose body never is (HTTP/2 frames written by hand: no library needed). The
attack holds the connections for --hold seconds (reading and dropping what
the server sends), then closes them all. Meanwhile a legitimate client calls
Health/Check every 50 ms on a connection of its own and times each call.
VmRSS of the server is sampled every 100 ms throughout:

    idle        RSS before the attack (after a few legitimate calls)
    peak        the highest RSS sampled during the attack
    after 30 s  RSS 30 s after the attack's connections closed (and the lowest
                sampled in those 30 s)

and the target of issue 18 is checked: RSS after 30 s <= 2 x idle + 32 MiB.

    bench/scripts/headers-only-attack.py [--bin target/release/auth-service]
        [--connections 100] [--streams 256] [--hold 15] [--after 30]
        [--env KEY=VALUE ...] [--json]

--env passes settings or an allocator to the server (repeatable), e.g.
--env LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2. Run several
configurations one after the other with --label, and compare medians.
"""

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, SETTINGS, PING, GOAWAY = 0x0, 0x1, 0x4, 0x6, 0x7
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def header_block(path, authority):
    """Request headers in HPACK: static-table names, literal values, no Huffman."""
    block = bytearray([0x83, 0x86])  # :method POST, :scheme http

    def literal(index, value):
        block.append(index)
        block.append(len(value))
        block.extend(value)

    literal(0x04, path.encode())  # :path
    literal(0x01, authority.encode())  # :authority
    block.extend([0x0F, 0x10, 16])  # content-type (static 31)
    block.extend(b"application/grpc")
    block.extend([0x00, 2])  # te, a literal name
    block.extend(b"te")
    block.append(8)
    block.extend(b"trailers")
    return bytes(block)


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        return None
    return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def drain(reader):
    """Reads and drops whatever the server sends until it closes."""
    try:
        while await reader.read(65536):
            pass
    except (ConnectionError, OSError):
        pass


async def handshake(addr):
    reader, writer = await asyncio.open_connection(*addr)
    writer.write(PREFACE + frame(SETTINGS, 0, 0))
    await writer.drain()
    return reader, writer


async def attacker(addr, streams, block):
    reader, writer = await handshake(addr)
    # The server's SETTINGS come first, at once: acknowledge them (a client
    # that does not gets the same treatment, but this is the usual client).
    await reader.read(65536)
    writer.write(frame(SETTINGS, ACK, 0))
    for i in range(streams):
        writer.write(frame(HEADERS, END_HEADERS, 2 * i + 1, block))
    await writer.drain()
    return reader, writer


class Legit:
    """Health/Check every 50 ms on its own connection: the answer is the
    frame that ends the stream (trailers, or trailers-only headers)."""

    def __init__(self, addr):
        self.addr = addr
        self.latencies = []
        self.failures = 0
        self.stopped = False

    async def run(self):
        block = header_block("/grpc.health.v1.Health/Check", f"{self.addr[0]}:{self.addr[1]}")
        reader, writer = await handshake(self.addr)
        stream = 1
        buffered = b""
        while not self.stopped:
            began = time.monotonic()
            writer.write(frame(HEADERS, END_HEADERS, stream, block) + frame(DATA, END_STREAM, stream, b"\0" * 5))
            await writer.drain()
            done = False
            try:
                while not done:
                    while len(buffered) < 9:
                        chunk = await asyncio.wait_for(reader.read(65536), 5)
                        if not chunk:
                            raise ConnectionError("closed")
                        buffered += chunk
                    length = int.from_bytes(buffered[:3], "big")
                    while len(buffered) < 9 + length:
                        chunk = await asyncio.wait_for(reader.read(65536), 5)
                        if not chunk:
                            raise ConnectionError("closed")
                        buffered += chunk
                    kind, flags = buffered[3], buffered[4]
                    sid = int.from_bytes(buffered[5:9], "big") & 0x7FFFFFFF
                    payload = buffered[9 : 9 + length]
                    buffered = buffered[9 + length :]
                    if kind == PING and not flags & ACK:
                        writer.write(frame(PING, ACK, 0, payload))
                    if kind == SETTINGS and not flags & ACK:
                        writer.write(frame(SETTINGS, ACK, 0))
                    if sid == stream and kind == HEADERS and flags & END_STREAM:
                        done = True
            except (asyncio.TimeoutError, ConnectionError, OSError):
                self.failures += 1
                writer.close()
                reader, writer = await handshake(self.addr)
                buffered = b""
                stream = -1
            if done:
                self.latencies.append(time.monotonic() - began)
            stream += 2
            await asyncio.sleep(0.05)
        writer.close()


async def sample(pid, into, stop):
    while not stop.is_set():
        value = rss_kib(pid)
        if value is not None:
            into.append((time.monotonic(), value))
        await asyncio.sleep(0.1)


def wait_serving(addr, server, timeout=60):
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if server.poll() is not None:
            sys.exit(f"the server exited: {server.returncode}")
        try:
            socket.create_connection(addr, timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit("the server did not start listening")


def percentile(values, p):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


async def attack(args, pid, addr):
    block = header_block("/auth.v1.AuthService/Register", f"{addr[0]}:{addr[1]}")
    legit = Legit(addr)
    legit_task = asyncio.create_task(legit.run())
    await asyncio.sleep(2)
    idle = rss_kib(pid)
    samples, stop = [], asyncio.Event()
    sampler = asyncio.create_task(sample(pid, samples, stop))
    began = time.monotonic()
    before = len(legit.latencies)
    connections = await asyncio.gather(
        *(attacker(addr, args.streams, block) for _ in range(args.connections)), return_exceptions=True
    )
    opened = [c for c in connections if not isinstance(c, BaseException)]
    drains = [asyncio.create_task(drain(reader)) for reader, _ in opened]
    await asyncio.sleep(args.hold - (time.monotonic() - began))
    attack_legit = legit.latencies[before:]
    for _, writer in opened:
        writer.transport.abort()
    for task in drains:
        task.cancel()
    ended = time.monotonic()
    peak = max(v for _, v in samples)
    await asyncio.sleep(args.after)
    after = rss_kib(pid)
    lowest_after = min(v for t, v in samples if t >= ended)
    stop.set()
    await sampler
    legit.stopped = True
    await legit_task
    target = 2 * idle + 32 * 1024
    return {
        "label": args.label,
        "connections": args.connections,
        "connections_opened": len(opened),
        "streams_per_connection": args.streams,
        "hold_s": args.hold,
        "rss_idle_kib": idle,
        "rss_peak_kib": peak,
        "rss_after_kib": after,
        "rss_lowest_after_kib": lowest_after,
        "after_s": args.after,
        "target_kib": target,
        "met": after <= target,
        "legit_calls": len(legit.latencies),
        "legit_failures": legit.failures,
        "legit_p50_ms": (percentile(attack_legit, 0.5) or 0) * 1000,
        "legit_p99_ms": (percentile(attack_legit, 0.99) or 0) * 1000,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", default="target/release/auth-service")
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--streams", type=int, default=256)
    parser.add_argument("--hold", type=float, default=15.0, help="seconds the attack holds its connections")
    parser.add_argument("--after", type=float, default=30.0, help="seconds to wait after it before reading RSS")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--label", default="default")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    scratch = tempfile.mkdtemp(prefix="headers-only-")
    addr = ("127.0.0.1", free_port())
    env = dict(os.environ)
    env.update(
        AUTH_LISTEN_ADDR=f"{addr[0]}:{addr[1]}",
        AUTH_DATABASE_URL=f"sqlite://{scratch}/auth.db?mode=rwc",
        AUTH_JWT_SECRET="headers-only-attack-" + "x" * 32,
        RUST_LOG="warn",
    )
    for item in args.env:
        key, _, value = item.partition("=")
        env[key] = value
    server = subprocess.Popen([args.bin, "serve"], env=env, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_serving(addr, server)
        result = asyncio.run(attack(args, server.pid, addr))
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(scratch, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
    else:
        mib = lambda kib: f"{kib / 1024:.1f} MiB"
        print(
            f"{result['label']}: {result['connections_opened']}/{args.connections} connections x {args.streams} "
            f"headers-only calls, held {args.hold:.0f} s\n"
            f"  RSS idle {mib(result['rss_idle_kib'])}, peak {mib(result['rss_peak_kib'])}, "
            f"after {args.after:.0f} s {mib(result['rss_after_kib'])} (lowest {mib(result['rss_lowest_after_kib'])}); "
            f"target <= {mib(result['target_kib'])}: {'met' if result['met'] else 'NOT met'}\n"
            f"  legitimate Health/Check: {result['legit_calls']} calls, {result['legit_failures']} failed, "
            f"during the attack p50 {result['legit_p50_ms']:.1f} ms p99 {result['legit_p99_ms']:.1f} ms"
        )


if __name__ == "__main__":
    main()
