"""Load generators the runner starts under the load group (so their TCP is redirected).

- `bulk`: K parallel connections to the bulk origin, each downloading n bytes into one
  reused buffer (`recv_into`, GIL released per read: the client is not the bottleneck).
  Prints one JSON line: bytes received, wall seconds, whether every byte arrived.
- `hold`: opens N connections to the hold origin and waits for each one's hello byte, so
  every connection is relayed end to end; prints `READY n`, then keeps them idle until a
  line on stdin (or `--max-seconds`), closes them and prints `CLOSED`.

Every loop is bounded: socket timeouts and an overall deadline.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import select
import socket
import sys
import threading
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.rig import BULK_IP, BULK_PORT, HOLD_PORT


def download(nbytes: int, timeout: float, out: list[int], index: int) -> None:
    """One bulk connection; `out[index]` gets the bytes received (-1 on an error)."""
    buf = bytearray(1 << 20)
    total = 0
    try:
        with socket.create_connection((BULK_IP, BULK_PORT), timeout=timeout) as sock:
            sock.sendall(f"DOWN {nbytes}\n".encode())
            while n := sock.recv_into(buf):
                total += n
    except OSError as exc:
        print(f"loadgen: bulk connection {index}: {exc}", file=sys.stderr)
        total = -1
    out[index] = total


def cmd_bulk(args: argparse.Namespace) -> int:
    out = [0] * args.conns
    threads = [
        threading.Thread(target=download, args=(args.bytes, args.timeout, out, i))
        for i in range(args.conns)
    ]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    ok = all(n == args.bytes for n in out)
    print(json.dumps({"bytes": sum(max(0, n) for n in out), "seconds": seconds, "ok": ok}))
    return 0 if ok else 1


def cmd_hold(args: argparse.Namespace) -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < args.conns + 64:
        print(f"loadgen: RLIMIT_NOFILE {hard} is too low for {args.conns}", file=sys.stderr)
        return 2
    deadline = time.monotonic() + args.max_seconds
    socks: list[socket.socket] = []
    try:
        # Batches: connect many (the kernel completes them from the listen queue), then
        # collect their hello bytes, so the proxy always has work queued.
        while len(socks) < args.conns:
            if time.monotonic() > deadline:
                print("loadgen: hold: deadline passed while opening", file=sys.stderr)
                return 1
            batch = []
            for _ in range(min(args.batch, args.conns - len(socks))):
                sock = socket.create_connection((BULK_IP, HOLD_PORT), timeout=args.timeout)
                batch.append(sock)
                socks.append(sock)
            for sock in batch:
                if sock.recv(1) != b"H":
                    print("loadgen: hold: no hello byte (relay not up)", file=sys.stderr)
                    return 1
        print(f"READY {len(socks)}", flush=True)
        remaining = max(0.0, deadline - time.monotonic())
        select.select([sys.stdin], [], [], remaining)
        return 0
    except OSError as exc:
        print(f"loadgen: hold: {exc} after {len(socks)} connections", file=sys.stderr)
        return 1
    finally:
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.close()
        print("CLOSED", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    bulk = sub.add_parser("bulk")
    bulk.add_argument("--conns", type=int, default=1)
    bulk.add_argument("--bytes", type=int, required=True, help="per connection")
    bulk.add_argument("--timeout", type=float, default=30.0, help="per socket operation")
    hold = sub.add_parser("hold")
    hold.add_argument("--conns", type=int, required=True)
    hold.add_argument("--batch", type=int, default=200)
    hold.add_argument("--timeout", type=float, default=10.0)
    hold.add_argument("--max-seconds", type=float, default=120.0)
    args = parser.parse_args()
    return cmd_bulk(args) if args.cmd == "bulk" else cmd_hold(args)


if __name__ == "__main__":
    sys.exit(main())
