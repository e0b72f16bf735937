"""translate --parallel 4 versus 1 through the remote engine, against real llama-cpp-python servers.

llama-cpp-python's server (what `gptcli serve` runs) generates one reply at a time: requests queue
on its model lock. A "4-slot server" is therefore built from 4 `gptcli serve` processes behind a
small least-busy proxy (below), which is what a multi-slot server (llama-server -np 4, vLLM) offers
to a client: up to 4 replies streaming at once. Four setups are measured:

  1 server,  --parallel 1   the baseline
  1 server,  --parallel 4   requests queue on the server: no gain expected
  4 servers, --parallel 1   same hardware split in 4, used one at a time
  4 servers, --parallel 4   4 chunks in flight

Every run translates the same generated Markdown document with greedy sampling into a fresh
GPTCLI_HOME (no resume cache); the setups run interleaved for --rounds rounds (the machine's load
drifts) and the medians of wall time and output tokens/s are reported, with the load average.

Usage: .venv/bin/python benchmarks/parallel_bench.py [--paragraphs 8] [--servers 4] [--rounds 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
GPTCLI = str(Path(sys.executable).parent / "gptcli")

SENTENCES = [
    "The old lighthouse keeper climbed the stairs every evening before sunset.",
    "He lit the lamp, wiped the glass and watched the fishing boats come home.",
    "In winter the wind was so strong that the whole tower seemed to sway.",
    "His daughter wrote him letters from the city about her work at the library.",
    "Every spring the village painted the boats in bright blue and yellow.",
    "Nobody remembered when the last ship had been lost on the rocks.",
]


def make_document(paragraphs: int) -> str:
    parts = ["# The lighthouse\n"]
    for i in range(paragraphs):
        if i % 6 == 5:
            parts.append(f"## Part {i // 6 + 1}\n")
        words = [SENTENCES[(i + k) % len(SENTENCES)] for k in range(3)]
        parts.append(" ".join(words) + "\n")
    return "\n".join(parts)


# ---------------------------------------------------------------- servers


def start_server(ctx: int, threads: int, home: Path) -> tuple[subprocess.Popen, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPTCLI_")}
    env["GPTCLI_HOME"] = str(home)
    proc = subprocess.Popen(
        [GPTCLI, "serve", "--port", "0", "--ctx", str(ctx), "--threads", str(threads)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=env,
    )
    assert proc.stdout is not None
    banner = b""
    deadline = time.monotonic() + 180
    while b"\nthen:" not in banner:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"gptcli serve did not start: {banner.decode(errors='replace')}")
        if select.select([proc.stdout], [], [], 0.5)[0]:
            banner += os.read(proc.stdout.fileno(), 65536)
    match = re.search(rb"at (http://127\.0\.0\.1:\d+/v1)", banner)
    assert match
    return proc, match.group(1).decode()


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class QuietHTTPServer(ThreadingHTTPServer):
    """A client closing its keep-alive connection is normal here, not an error worth a traceback."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)


class SlotProxy:
    """Least-busy proxy: each generation goes to a backend that is not generating (waits for one).

    Other requests (models, tokenize, props) go to the first backend. Streams pass through as
    they arrive (re-chunked), so the client sees what a multi-slot server would send.
    """

    def __init__(self, backends: list[str]) -> None:
        self.backends = [urlsplit(b) for b in backends]
        self.busy = [False] * len(backends)
        self.cond = threading.Condition()
        self.served = [0] * len(backends)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                proxy.forward(self, "GET")

            def do_POST(self) -> None:
                proxy.forward(self, "POST")

        self.server = QuietHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def acquire(self) -> int:
        with self.cond:
            while all(self.busy):
                self.cond.wait()
            index = self.busy.index(False)
            self.busy[index] = True
            self.served[index] += 1
            return index

    def release(self, index: int) -> None:
        with self.cond:
            self.busy[index] = False
            self.cond.notify()

    def forward(self, h: BaseHTTPRequestHandler, method: str) -> None:
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        generating = h.path.endswith("/completions")
        index = self.acquire() if generating else 0
        try:
            target = self.backends[index]
            conn = http.client.HTTPConnection(target.hostname, target.port, timeout=600)
            headers = {k: v for k, v in h.headers.items() if k.lower() not in ("host", "content-length", "connection")}
            conn.request(method, h.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            h.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in ("transfer-encoding", "content-length", "connection"):
                    h.send_header(k, v)
            h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            try:
                while data := resp.read1(65536):
                    h.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                    h.wfile.flush()
                h.wfile.write(b"0\r\n\r\n")
                h.wfile.flush()
            except OSError:  # the client closed its side after [DONE]
                h.close_connection = True
            conn.close()
        finally:
            if generating:
                self.release(index)


# ---------------------------------------------------------------- runs


def translate(doc: Path, base_url: str, parallel: int, chunk_tokens: int, out: Path) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="gptcli-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPTCLI_")}
    env["GPTCLI_HOME"] = str(home)
    started = time.perf_counter()
    proc = subprocess.run(
        [GPTCLI, "translate", str(doc), "--to", "fr", "-o", str(out), "--force", "--engine", "remote",
         "--base-url", base_url, "--parallel", str(parallel), "--chunk-tokens", str(chunk_tokens),
         "--temperature", "0", "--seed", "1"],
        capture_output=True, text=True, env=env, timeout=3600,
    )
    wall = time.perf_counter() - started
    shutil.rmtree(home, ignore_errors=True)
    if proc.returncode != 0:
        raise SystemExit(f"translate failed ({proc.returncode}): {proc.stderr}")
    found = re.search(r"(\d+) chunks.*?([\d,]+) tokens", proc.stderr, re.S)
    chunks, tokens = (int(found.group(1)), int(found.group(2).replace(",", ""))) if found else (0, 0)
    return {"wall_s": round(wall, 1), "chunks": chunks, "tokens": tokens, "tok_s": round(tokens / wall, 1) if wall else 0.0}


def warm_up(base_url: str, times: int) -> None:
    """A short reply per backend first: the first request of a fresh server pages the model in."""
    import urllib.request

    body = json.dumps({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}).encode()
    for _ in range(times):
        request = urllib.request.Request(f"{base_url}/chat/completions", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=300) as response:
            response.read()


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--paragraphs", type=int, default=16)
    parser.add_argument("--servers", type=int, default=4)
    parser.add_argument("--ctx", type=int, default=1024)
    parser.add_argument("--chunk-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="each setup runs this many times, interleaved")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="threads of the single server")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="parallel-bench-"))
    doc = work / "doc.md"
    doc.write_text(make_document(args.paragraphs), encoding="utf-8")
    cores = os.cpu_count() or 1
    per = max(1, cores // args.servers)
    load_before = os.getloadavg()[0]

    single, single_url = start_server(args.ctx, args.threads, work / "s0")
    servers = [start_server(args.ctx, per, work / f"s{i + 1}") for i in range(args.servers)]
    proxy = SlotProxy([u for _, u in servers])
    setups = [
        (f"1 server ({args.threads} thread{'s' if args.threads > 1 else ''}), --parallel 1", single_url, 1),
        (f"1 server ({args.threads} thread{'s' if args.threads > 1 else ''}), --parallel 4", single_url, 4),
        (f"{args.servers} servers ({per} thread{'s' if per > 1 else ''} each) behind the proxy, --parallel 1", proxy.base_url, 1),
        (f"{args.servers} servers ({per} thread{'s' if per > 1 else ''} each) behind the proxy, --parallel 4", proxy.base_url, 4),
    ]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in setups}
    outputs: dict[str, set[str]] = {name: set() for name, _, _ in setups}
    try:
        warm_up(single_url, 1)
        warm_up(proxy.base_url, args.servers)
        for round_ in range(args.rounds):
            for name, url, parallel in setups:
                out = work / "out.md"
                result = translate(doc, url, parallel, args.chunk_tokens, out)
                runs[name].append(result)
                outputs[name].add(out.read_text(encoding="utf-8"))
                print(f"round {round_ + 1}: {name}: {result}", flush=True)
    finally:
        stop(single)
        for proc, _ in servers:
            stop(proc)
        proxy.server.shutdown()

    words = len(doc.read_text(encoding="utf-8").split())
    print()
    print(f"Document: {words} words, {args.paragraphs} paragraphs; chunk size {args.chunk_tokens} tokens; "
          f"model smollm2-135m (embedded), ctx {args.ctx}; {cores} CPU cores; {args.rounds} rounds, medians; "
          f"load average before: {load_before:.2f}, after: {os.getloadavg()[0]:.2f}")
    print()
    print("| setup | chunks | output tokens | wall time (s) | output tokens/s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    summary = {}
    for name, _, _ in setups:
        r = runs[name]
        row = {
            "chunks": r[0]["chunks"],
            "tokens": int(median([x["tokens"] for x in r])),
            "wall_s": round(median([x["wall_s"] for x in r]), 1),
            "tok_s": round(median([x["tok_s"] for x in r]), 1),
            "all_wall_s": [x["wall_s"] for x in r],
        }
        summary[name] = row
        print(f"| {name} | {row['chunks']} | {row['tokens']} | {row['wall_s']} | {row['tok_s']} |")
    print()
    print(json.dumps({"results": summary, "distinct_outputs": {k: len(v) for k, v in outputs.items()}}))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
