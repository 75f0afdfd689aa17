#!/usr/bin/env python3
"""Soak test of `fmnist serve` on loopback.

Starts the server with MODEL, then for DURATION seconds WORKERS threads send a mix of
valid images (raw and multipart), garbage bytes, oversized bodies, slow uploads, aborted
connections and page/API reads, while another thread keeps 50 connections open that
send nothing or half a header until the server cuts them off, a third sends rounds of 64
uploads of 8 MiB − 1 bytes that then stall (the server's upload budget must hold), and a
fourth sends big but legal images (6000×4000 RGB PNGs). Every loop stops by itself.
At the end it prints what was sent and answered, the latency of the valid predictions and
the server's peak memory, and exits non-zero if the server failed: a 5xx, an unexpected status, a panic in its
log, a valid prediction slower than the limit at p99, peak memory over the limit, or a crash.

Usage: bench/soak.py MODEL [DURATION_S=60] [WORKERS=8] [P99_LIMIT_MS=50] [PEAK_MB_LIMIT=300]
"""
import http.client
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections import Counter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FMNIST = os.path.join(ROOT, "target", "release", "fmnist")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    model = sys.argv[1]
    duration = float(sys.argv[2]) if len(sys.argv) > 2 else 60.0
    workers = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    # Big images take a core each while they decode, so small ones wait behind them.
    p99_limit = float(sys.argv[4]) if len(sys.argv) > 4 else 50.0
    peak_limit = float(sys.argv[5]) if len(sys.argv) > 5 else 300.0
    port = free_port()
    log = open(os.path.join(os.environ.get("TMPDIR", "/tmp"), f"fmnist-soak-{port}.log"), "w+")
    server = subprocess.Popen(
        [FMNIST, "serve", model, "--addr", f"127.0.0.1:{port}", "--offline"],
        stdout=log, stderr=subprocess.STDOUT)
    for _ in range(200):
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/api/health")
            if c.getresponse().status == 200:
                break
        except OSError:
            time.sleep(0.05)
    else:
        server.kill()
        sys.exit("the server did not start")

    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request("GET", "/api/sample")
    sample = c.getresponse().read()

    lock = threading.Lock()
    sent = Counter()
    answers = Counter()
    problems = []
    latencies = []
    peak_rss = [0]
    end = time.monotonic() + duration

    def note(kind, status, expected):
        with lock:
            sent[kind] += 1
            answers[(kind, status)] += 1
            if status not in expected:
                problems.append(f"{kind}: status {status}, expected {sorted(expected)}")

    def request(method, path, body=None, headers=None, timeout=10):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            r.read()
            return r.status
        finally:
            conn.close()

    def valid():
        t = time.perf_counter()
        status = request("POST", "/api/predict", sample, {"Content-Type": "image/png"})
        ms = 1000 * (time.perf_counter() - t)
        with lock:
            latencies.append(ms)
        note("valid image", status, {200})

    def multipart():
        b = "soakboundary"
        body = (f"--{b}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x.png\"\r\n"
                "Content-Type: image/png\r\n\r\n").encode() + sample + f"\r\n--{b}--\r\n".encode()
        status = request("POST", "/api/predict", body,
                         {"Content-Type": f"multipart/form-data; boundary={b}"})
        note("multipart image", status, {200})

    def garbage(rng):
        body = rng.randbytes(rng.randint(1, 4096))
        if rng.random() < 0.5:  # a PNG signature followed by junk
            body = b"\x89PNG\r\n\x1a\n" + body
        status = request("POST", "/api/predict", body, {"Content-Type": "image/png"})
        note("garbage bytes", status, {415, 422})

    def oversized():
        # Declared 9 MiB against the 8 MiB limit: the server answers 413 without reading it.
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            s.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                      b"Content-Length: 9437184\r\nConnection: close\r\n\r\n")
            try:
                s.sendall(b"\0" * (9 << 20))
            except OSError:
                pass  # the server may close before it all arrives
            reply = s.recv(4096)
            status = int(reply.split()[1]) if reply else 0
        finally:
            s.close()
        note("oversized body", status, {413})

    def slow(rng):
        # A valid image trickled in over about a second.
        s = socket.create_connection(("127.0.0.1", port), timeout=20)
        try:
            s.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                      + f"Content-Length: {len(sample)}\r\nConnection: close\r\n\r\n".encode())
            pieces = [sample[i:i + 64] for i in range(0, len(sample), 64)]
            for p in pieces:
                s.sendall(p)
                time.sleep(1.0 / len(pieces))
            reply = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                reply += chunk
            status = int(reply.split()[1]) if reply else 0
        finally:
            s.close()
        note("slow upload", status, {200})

    def aborted(rng):
        # Headers and part of the body, then the connection is dropped.
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                  + f"Content-Length: {len(sample)}\r\n\r\n".encode()
                  + sample[:rng.randint(0, len(sample) - 1)])
        if rng.random() < 0.5:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")  # RST
        s.close()
        with lock:
            sent["aborted upload"] += 1

    def reads(rng):
        path = rng.choice(["/", "/api/health", "/api/model", "/api/sample", "/nope"])
        note(f"GET {path}", request("GET", path), {404} if path == "/nope" else {200})

    def silent_clients():
        # Rounds of 50 connections that send nothing or half a header, held open until
        # the server cuts them off (its header timeout is 15 s).
        while time.monotonic() < end - 16:
            socks = []
            for i in range(50):
                s = socket.create_connection(("127.0.0.1", port), timeout=25)
                if i % 2:
                    s.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\n")
                socks.append(s)
            for s in socks:
                try:
                    closed = s.recv(1) == b""
                except OSError:  # a reset is a close too
                    closed = True
                s.close()
                note("silent connection", "closed" if closed else "open", {"closed"})

    def stalled_uploads():
        # Rounds of 64 uploads declaring 8 MiB that send all but the last byte and stall:
        # the server holds at most its upload budget for them and gives each up after its
        # idle limit (408), or answers 503 while the budget is taken.
        def one(i, outcomes):
            s = socket.create_connection(("127.0.0.1", port), timeout=40)
            try:
                s.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                          b"Content-Length: 8388608\r\nConnection: close\r\n\r\n")
                try:
                    s.sendall(b"\x89PNG" + b"\0" * ((8 << 20) - 5))
                except OSError:
                    pass
                reply = s.recv(4096)
                outcomes[i] = int(reply.split()[1]) if reply else "closed"
            except OSError:
                outcomes[i] = "closed"
            finally:
                s.close()

        while time.monotonic() < end - 45:
            outcomes = [None] * 64
            group = [threading.Thread(target=one, args=(i, outcomes)) for i in range(64)]
            for t in group:
                t.start()
            for t in group:
                t.join()
            for o in outcomes:
                note("stalled 8 MiB upload", o, {408, 503, "closed"})

    def big_images():
        # 6000×4000 RGB PNGs (72 MB of pixels, a few hundred KB of file), one after another.
        import struct, zlib
        w, h = 6000, 4000
        row = bytes([0]) + bytes((x * 7 + 40) % 256 for x in range(3 * w))
        raw = zlib.compress(row * h, 6)
        def chunk(kind, data):
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
               + chunk(b"IDAT", raw) + chunk(b"IEND", b""))
        while time.monotonic() < end - 5:
            try:
                note("big 6000×4000 PNG", request("POST", "/api/predict", png,
                                                  {"Content-Type": "image/png"}, timeout=60), {200})
            except Exception as e:
                with lock:
                    problems.append(f"big image: {type(e).__name__}: {e}")

    def worker(seed):
        rng = random.Random(seed)
        while time.monotonic() < end:
            x = rng.random()
            what = "request"
            try:
                if x < 0.45:
                    what = "valid"
                    valid()
                elif x < 0.55:
                    what = "multipart"
                    multipart()
                elif x < 0.70:
                    what = "garbage"
                    garbage(rng)
                elif x < 0.74:
                    what = "oversized"
                    oversized()
                elif x < 0.77:
                    what = "slow"
                    slow(rng)
                elif x < 0.87:
                    what = "aborted"
                    aborted(rng)
                else:
                    what = "reads"
                    reads(rng)
            except Exception as e:  # a refused or reset connection is a failure of the server
                with lock:
                    problems.append(f"{what}: {type(e).__name__}: {e}")

    def watch_memory():
        while time.monotonic() < end + 1 and server.poll() is None:
            try:
                with open(f"/proc/{server.pid}/status") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            peak_rss[0] = int(line.split()[1]) // 1024
            except OSError:
                pass
            time.sleep(0.5)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
    threads.append(threading.Thread(target=watch_memory))
    threads.append(threading.Thread(target=silent_clients))
    threads.append(threading.Thread(target=stalled_uploads))
    threads.append(threading.Thread(target=big_images))
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    alive = server.poll() is None
    server.send_signal(2)  # Ctrl-C
    try:
        code = server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
        code = "did not stop"
    log.seek(0)
    text = log.read()
    if "panicked" in text or "internal error" in text:
        problems.append("the server's log shows a panic")
    if not alive:
        problems.append("the server died")
    if code != 0:
        problems.append(f"the server exited with {code} after Ctrl-C")

    latencies.sort()
    pct = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else float("nan")
    print(f"soak: {elapsed:.0f} s, {workers} workers, {sum(sent.values())} requests")
    for kind, n in sorted(sent.items()):
        statuses = ", ".join(f"{s}: {c}" for (k, s), c in sorted(answers.items()) if k == kind)
        print(f"  {kind:<18} {n:>7}  {statuses}")
    print(f"valid predictions: p50 {pct(0.5):.2f} ms, p99 {pct(0.99):.2f} ms, max {latencies[-1] if latencies else 0:.2f} ms")
    print(f"server peak memory {peak_rss[0]} MB; stopped on Ctrl-C with status {code}")
    if peak_rss[0] > peak_limit:
        problems.append(f"peak memory {peak_rss[0]} MB is over {peak_limit:.0f} MB")
    if pct(0.99) > p99_limit:
        problems.append(f"p99 {pct(0.99):.2f} ms is over {p99_limit} ms")
    for p in problems[:20]:
        print("problem:", p)
    if problems:
        print(f"FAILED: {len(problems)} problems")
        sys.exit(1)
    print("ok")


if __name__ == "__main__":
    main()
