"""A scripted OpenAI-compatible server on 127.0.0.1 (stdlib http.server) for the remote engine's tests.

It speaks the real wire format (SSE over chunked HTTP/1.1), records every request, and can
misbehave on demand: drop connections, stall, cut a stream mid-reply, answer with an HTTP error.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeOpenAIServer:
    """Replies stream word by word. Knobs are plain attributes; tests change them between calls."""

    reply: str = "Hello from the remote fake."
    models: list[str] = field(default_factory=lambda: ["fake-model"])
    api_key: str | None = None  # when set, requests without "Bearer <key>" get 401
    tokenizer: str | None = "llama.cpp"  # "llama.cpp" (/tokenize with content), "vllm", or None
    n_ctx: int | None = 2048  # served in /props when set
    delay: float = 0.0  # seconds between streamed words
    drop_connections: int = 0  # close this many chat requests without any response
    cut_after: int | None = None  # stream this many words, then kill the connection
    status: int | None = None  # answer chat requests with this HTTP error
    status_body: Any = None
    retry_after: str | None = None
    stall: float = 0.0  # wait this long before the response headers
    send_usage: bool = True
    # a hostile or failing server: after `hostile_after` words, send these raw `data:` payloads and end
    hostile_events: list[str] | None = None
    hostile_after: int = 2
    reply_fn: Callable[[dict[str, Any]], str] | None = None  # the reply from the request body
    delay_fn: Callable[[dict[str, Any]], float] | None = None  # per-request delay between words
    in_flight: int = 0
    max_in_flight: int = 0  # the most streams served at the same time
    requests: list[Recorded] = field(default_factory=list)
    disconnects: list[float] = field(default_factory=list)  # when a client went away mid-stream

    def __post_init__(self) -> None:
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.lock = threading.Lock()

    # ------------------------------------------------------------ lifecycle

    def start(self) -> FakeOpenAIServer:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_POST(self) -> None:
                fake._handle(self, "POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def chat_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    # ------------------------------------------------------------ handling

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        with self.lock:
            self.requests.append(Recorded(method, h.path, {k.lower(): v for k, v in h.headers.items()}, body))
        path = h.path.split("?")[0]

        if self.api_key and path.startswith("/v1") and h.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self._json(h, 401, {"detail": "Invalid API key"})
        if path == "/v1/models" and method == "GET":
            return self._json(h, 200, {"object": "list", "data": [{"id": m, "object": "model"} for m in self.models]})
        if path == "/props" and self.n_ctx:
            return self._json(h, 200, {"default_generation_settings": {"n_ctx": self.n_ctx}})
        if path == "/tokenize" and self.tokenizer == "llama.cpp" and isinstance(body, dict) and "content" in body:
            return self._json(h, 200, {"tokens": list(range(len(str(body["content"]).split())))})
        if path == "/tokenize" and self.tokenizer == "vllm" and isinstance(body, dict) and "prompt" in body:
            n = len(str(body["prompt"]).split())
            return self._json(h, 200, {"count": n, "tokens": list(range(n))})
        if path in ("/v1/chat/completions", "/v1/completions") and method == "POST":
            return self._generate(h, body, chat=path.endswith("chat/completions"))
        return self._json(h, 404, {"error": {"message": f"no route {path}", "type": "not_found"}})

    def _json(self, h: BaseHTTPRequestHandler, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(data).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(payload)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(payload)

    def _generate(self, h: BaseHTTPRequestHandler, body: Any, *, chat: bool) -> None:
        with self.lock:
            drop = self.drop_connections > 0
            if drop:
                self.drop_connections -= 1
        if drop:
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)
            return
        if self.stall:
            time.sleep(self.stall)
        if self.status:
            headers = {"Retry-After": self.retry_after} if self.retry_after else None
            data = self.status_body if self.status_body is not None else {"error": {"message": f"scripted {self.status}"}}
            return self._json(h, self.status, data, headers)
        body = body or {}
        stream = bool(body.get("stream"))
        reply = self.reply_fn(body) if self.reply_fn else self.reply
        delay = self.delay_fn(body) if self.delay_fn else self.delay
        words = reply.split(" ")
        pieces = [w if i == len(words) - 1 else w + " " for i, w in enumerate(words)]
        limit = body.get("max_tokens")
        finish = "length" if isinstance(limit, int) and limit < len(pieces) else "stop"
        if isinstance(limit, int):
            pieces = pieces[:limit]
        if not stream:
            text = "".join(pieces)
            choice = {"index": 0, "message": {"role": "assistant", "content": text}} if chat else {"index": 0, "text": text}
            choice["finish_reason"] = finish
            return self._json(h, 200, {"id": "x", "object": "chat.completion", "model": body.get("model"), "choices": [choice]})

        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()

        def event(data: Any) -> None:
            line = f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode()
            h.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
            h.wfile.flush()

        def chunk(delta: str | None, reason: str | None = None) -> dict[str, Any]:
            if chat:
                choice: dict[str, Any] = {"index": 0, "delta": {"content": delta} if delta is not None else {}}
            else:
                choice = {"index": 0, "text": delta or ""}
            choice["finish_reason"] = reason
            return {"id": "x", "object": "chat.completion.chunk", "model": body.get("model"), "choices": [choice]}

        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            for i, piece in enumerate(pieces):
                if self.hostile_events is not None and i >= self.hostile_after:
                    for raw in self.hostile_events:
                        event(raw)
                    h.wfile.write(b"0\r\n\r\n")
                    h.wfile.flush()
                    return
                if self.cut_after is not None and i >= self.cut_after:
                    h.close_connection = True
                    h.connection.shutdown(socket.SHUT_RDWR)  # a crash: no final chunk, no [DONE]
                    return
                event(chunk(piece))
                if delay:
                    time.sleep(delay)
            event(chunk(None, finish))
            if self.send_usage:
                event({"id": "x", "object": "chat.completion.chunk", "choices": [],
                       "usage": {"prompt_tokens": 11, "completion_tokens": len(pieces), "total_tokens": 11 + len(pieces)}})
            event("[DONE]")
            h.wfile.write(b"0\r\n\r\n")
            h.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            with self.lock:
                self.disconnects.append(time.monotonic())
            h.close_connection = True
        finally:
            with self.lock:
                self.in_flight -= 1
