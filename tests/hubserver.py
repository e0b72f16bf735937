"""A fake Hugging Face Hub on 127.0.0.1: the endpoints huggingface_hub calls, and a separate "CDN" for LFS files.

Hub (``url``):
  GET  /api/models/{repo}[/revision/{rev}]         model info (commit sha, gated, siblings)
  GET  /api/models/{repo}/tree/{rev}[/{path}]      tree listing, paginated with a ``Link`` header
  HEAD|GET /{repo}/resolve/{rev}/{path}            small files: 200 with ETag; LFS files: 302 to the CDN
                                                   with X-Repo-Commit, X-Linked-Etag, X-Linked-Size
CDN (``cdn_url``, another origin, like the real one):
  HEAD|GET /blobs/{sha256}                         the bytes, honouring ``Range`` (206 + Content-Range)

Errors carry the headers the real Hub sends (X-Error-Code: RepoNotFound / RevisionNotFound /
EntryNotFound / GatedRepo), and every request is recorded for the tests to inspect.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest

_HASHES: dict[tuple[str, int, float], str] = {}


def sha256_file(path: Path) -> str:
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


@dataclass
class HubFile:
    """A file in a fake repository: bytes in memory or a file on disk."""

    path: str
    source: bytes | Path
    lfs: bool = True
    serve_instead: bytes | None = None  # bytes actually sent (a corrupt transfer); headers still describe `source`

    @property
    def size(self) -> int:
        return len(self.source) if isinstance(self.source, bytes) else self.source.stat().st_size

    @property
    def sha256(self) -> str:
        if isinstance(self.source, bytes):
            return hashlib.sha256(self.source).hexdigest()
        return sha256_file(self.source)

    @property
    def git_oid(self) -> str:
        return hashlib.sha1(f"{self.path}:{self.size}".encode()).hexdigest()

    def body(self) -> bytes | Path:
        return self.serve_instead if self.serve_instead is not None else self.source


@dataclass
class HubRepo:
    repo_id: str
    files: dict[str, HubFile]
    commit: str
    gated: bool = False


@dataclass
class Recorded:
    server: str  # "hub" | "cdn"
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class FakeHub:
    """Start with ``with FakeHub() as hub:``; add repositories with ``hub.add_repo``."""

    token: str | None = None  # the token that opens gated repositories
    page_size: int = 1000
    cut_at: int | None = None  # CDN: drop the connection once this byte offset of a file has been sent
    echo_auth_in_errors: bool = False  # a misbehaving server that repeats the Authorization header
    throttle: float = 0.0  # CDN: seconds to pause after each MiB sent (a slow connection)
    etag: str | None = None  # a hostile Hub: this ETag (say '../../x') for every file it resolves
    etag_later: str | None = None  # ... or only from the second resolve on (a valid ETag first)
    resolves: int = 0
    repos: dict[str, HubRepo] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    _servers: list[ThreadingHTTPServer] = field(default_factory=list)

    # ---- setup

    def add_repo(self, repo_id: str, files: dict[str, bytes | Path], *, gated: bool = False) -> HubRepo:
        commit = hashlib.sha1(f"{repo_id}:{sorted(files)}:{len(self.repos)}".encode()).hexdigest()
        repo = HubRepo(
            repo_id,
            {p: HubFile(p, src, lfs=p.endswith(".gguf") or (isinstance(src, Path))) for p, src in files.items()},
            commit,
            gated,
        )
        self.repos[repo_id] = repo
        return repo

    def __enter__(self) -> FakeHub:
        for role in ("hub", "cdn"):
            server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self, role))
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
            self._servers.append(server)
        return self

    def __exit__(self, *exc: Any) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._servers[0].server_address[1]}"

    @property
    def cdn_url(self) -> str:
        return f"http://127.0.0.1:{self._servers[1].server_address[1]}"

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a gptcli process that should talk to this Hub."""
        return {"HF_ENDPOINT": self.url, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_TELEMETRY": "1", **extra}

    def find_blob(self, sha: str) -> HubFile | None:
        for repo in self.repos.values():
            for f in repo.files.values():
                if f.lfs and f.sha256 == sha:
                    return f
        return None

    def downloads(self) -> list[Recorded]:
        """GET requests for file contents (CDN blobs and small files resolved directly)."""
        return [r for r in self.requests if r.method == "GET" and (r.server == "cdn" or "/resolve/" in r.path)]


def _handler(hub: FakeHub, role: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        # ---- helpers

        def _record(self) -> None:
            hub.requests.append(Recorded(role, self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))

        def _authorized(self) -> str | None:
            value = self.headers.get("Authorization", "")
            return value.removeprefix("Bearer ").strip() or None

        def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            headers = dict(headers or {})
            headers.setdefault("Content-Length", str(len(body)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD" and body:
                self.wfile.write(body)

        def _json(self, data: Any, headers: dict[str, str] | None = None) -> None:
            body = json.dumps(data).encode()
            self._send(200, body, {"Content-Type": "application/json", **(headers or {})})

        def _error(self, status: int, code: str, message: str, extra: dict[str, str] | None = None) -> None:
            if hub.echo_auth_in_errors and self.headers.get("Authorization"):
                message += f" (you sent {self.headers['Authorization']})"
            body = json.dumps({"error": message}).encode()
            headers = {"Content-Type": "application/json", "X-Error-Code": code, "X-Error-Message": message, **(extra or {})}
            self._send(status, body, headers)

        def _repo(self, repo_id: str) -> HubRepo | None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                # the real Hub answers 401 to anonymous requests for repositories it will not show
                self._error(404 if self._authorized() else 401, "RepoNotFound", "Repository not found")
            return repo

        def _rev_ok(self, repo: HubRepo, rev: str) -> bool:
            if unquote(rev) in ("main", repo.commit):
                return True
            self._error(404, "RevisionNotFound", f"Invalid rev id: {unquote(rev)}")
            return False

        # ---- routes

        def do_HEAD(self) -> None:
            self._route()

        def do_GET(self) -> None:
            self._route()

        def _route(self) -> None:
            self._record()
            url = urlsplit(self.path)
            path = url.path
            try:
                if role == "cdn":
                    match = re.fullmatch(r"/blobs/([0-9a-f]{64})", path)
                    if not match:
                        return self._send(404, b"not found")
                    return self._blob(match.group(1))
                if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path):
                    return self._model_info(m.group(1), m.group(2) or "main")
                if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?", path):
                    return self._tree(m.group(1), m.group(2), unquote(m.group(3) or ""), parse_qs(url.query))
                if m := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
                    return self._resolve(m.group(1), m.group(2), unquote(m.group(3)))
                self._send(404, b"no such endpoint")
            except (BrokenPipeError, ConnectionResetError):
                pass

        def _model_info(self, repo_id: str, rev: str) -> None:
            repo = self._repo(repo_id)
            if repo is None or not self._rev_ok(repo, rev):
                return
            self._json(
                {
                    "_id": repo.commit[:24],
                    "id": repo.repo_id,
                    "modelId": repo.repo_id,
                    "author": repo.repo_id.split("/")[0],
                    "sha": repo.commit,
                    "lastModified": "2025-01-01T00:00:00.000Z",
                    "private": False,
                    "gated": "manual" if repo.gated else False,
                    "disabled": False,
                    "tags": ["gguf"],
                    "library_name": "gguf",
                    "siblings": [{"rfilename": p} for p in sorted(repo.files)],
                }
            )

        def _tree(self, repo_id: str, rev: str, sub: str, query: dict[str, list[str]]) -> None:
            repo = self._repo(repo_id)
            if repo is None or not self._rev_ok(repo, rev):
                return
            recursive = query.get("recursive", ["False"])[0].lower() == "true"
            prefix = f"{sub.rstrip('/')}/" if sub else ""
            entries: list[dict[str, Any]] = []
            folders: set[str] = set()
            for p, f in sorted(repo.files.items()):
                if not p.startswith(prefix):
                    continue
                rest = p[len(prefix):]
                if "/" in rest:
                    parts = rest.split("/")
                    for i in range(1, len(parts) if recursive else 2):
                        folders.add(prefix + "/".join(parts[:i]))
                    if not recursive:
                        continue
                entry: dict[str, Any] = {"type": "file", "oid": f.git_oid, "size": f.size, "path": p}
                if f.lfs:
                    entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": 134}
                entries.append(entry)
            if sub and not entries and not folders:
                return self._error(404, "EntryNotFound", f"{sub} does not exist on \"{rev}\"")
            entries += [{"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d} for d in sorted(folders)]
            entries.sort(key=lambda e: e["path"])
            start = int(query.get("cursor", ["0"])[0])
            page = entries[start : start + hub.page_size]
            headers = {}
            if start + hub.page_size < len(entries):
                nxt = f"{hub.url}{urlsplit(self.path).path}?recursive={recursive}&expand=False&cursor={start + hub.page_size}"
                headers["Link"] = f'<{nxt}>; rel="next"'
            self._json(page, headers)

        def _resolve(self, repo_id: str, rev: str, filename: str) -> None:
            repo = self._repo(repo_id)
            if repo is None or not self._rev_ok(repo, rev):
                return
            if repo.gated:
                given = self._authorized()
                if given is None:
                    return self._error(
                        401, "GatedRepo",
                        f"Access to model {repo_id} is restricted. You must have access to it and be authenticated to access it. Please log in.",
                    )
                if given != hub.token:
                    return self._error(
                        403, "GatedRepo",
                        f"Access to model {repo_id} is restricted and you are not in the authorized list. Visit {hub.url}/{repo_id} to ask for access.",
                    )
            f = repo.files.get(filename)
            hub.resolves += 1
            if hub.etag_later and hub.resolves > 1:
                hub.etag = hub.etag_later
            common = {"X-Repo-Commit": repo.commit, "Accept-Ranges": "bytes"}
            if f is None:
                return self._error(404, "EntryNotFound", "Entry not found", common)
            if f.lfs:
                location = f"{hub.cdn_url}/blobs/{f.sha256}?filename={quote(Path(filename).name)}"
                return self._send(
                    302,
                    b"",
                    {
                        **common,
                        "ETag": f'"{hub.etag or f.git_oid}"',
                        "X-Linked-Etag": f'"{hub.etag or f.sha256}"',
                        "X-Linked-Size": str(f.size),
                        "Location": location,
                    },
                )
            self._stream(f, {**common, "ETag": f'"{hub.etag or f.git_oid}"'})

        def _blob(self, sha: str) -> None:
            f = hub.find_blob(sha)
            if f is None:
                return self._send(404, b"no such blob")
            if self.headers.get("Authorization"):
                hub.requests[-1].headers["leaked-authorization"] = "yes"
            self._stream(f, {"ETag": f'"{sha}"', "Accept-Ranges": "bytes"})

        def _stream(self, f: HubFile, headers: dict[str, str]) -> None:
            body = f.body()
            size = len(body) if isinstance(body, bytes) else body.stat().st_size
            start = 0
            status = 200
            if rng := self.headers.get("Range"):
                m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
                if m:
                    start = int(m.group(1))
                    if start >= size:
                        return self._send(416, b"", {"Content-Range": f"bytes */{size}"})
                    status = 206
                    headers["Content-Range"] = f"bytes {start}-{size - 1}/{size}"
            length = size - start
            self.send_response(status)
            for k, v in {**headers, "Content-Length": str(length), "Content-Type": "application/octet-stream"}.items():
                self.send_header(k, v)
            self.end_headers()
            if self.command == "HEAD":
                return
            stop = size if hub.cut_at is None else max(start, min(size, hub.cut_at))
            self._write_range(body, start, stop)
            if stop < size:  # the connection drops mid-way
                self.close_connection = True
                try:
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        def _write_range(self, body: bytes | Path, start: int, stop: int) -> None:
            if isinstance(body, bytes):
                self.wfile.write(body[start:stop])
                return
            with body.open("rb") as src:
                src.seek(start)
                left = stop - start
                while left > 0:
                    chunk = src.read(min(1 << 20, left))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    left -= len(chunk)
                    if hub.throttle:
                        time.sleep(hub.throttle)

    return Handler


# ---------------------------------------------------------------- small valid GGUF files

QUANT_FILE_TYPES = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_K_M": 17, "Q4_K_S": 14, "Q4_K_M": 15, "Q6_K": 18}


def tiny_gguf(path: Path, *, quant: str = "Q4_K_M", arch: str = "llama", context: int = 2048, name: str = "tiny",
              split: tuple[int, int] | None = None, chat_template: str | None = "{{ messages }}", rows: int = 16) -> Path:
    """A small valid GGUF (float32 tensors, ``rows`` x 8 x 4 bytes) naming an architecture, context and quantization."""
    import numpy as np
    from gguf import GGUFWriter

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = GGUFWriter(str(path), arch)
    writer.add_name(name)
    writer.add_context_length(context)
    writer.add_block_count(2)
    writer.add_embedding_length(8)
    writer.add_file_type(QUANT_FILE_TYPES.get(quant, 15))
    if chat_template:
        writer.add_chat_template(chat_template)
    if split:
        index, count = split
        writer.add_uint16("split.no", index - 1)
        writer.add_uint16("split.count", count)
        writer.add_int32("split.tensors.count", 2 * count)
    seed = int(hashlib.sha1(f"{path.name}".encode()).hexdigest()[:8], 16)
    rng = np.random.default_rng(seed)
    writer.add_tensor(f"blk.{(split or (1, 1))[0]}.a.weight", rng.standard_normal((rows, 8), dtype=np.float32))
    writer.add_tensor(f"blk.{(split or (1, 1))[0]}.b.weight", rng.standard_normal((8,), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def loaded(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The local engine loader, replaced: records the GGUF each command would load and answers like the fake."""
    from tests.fakes import FakeEngine

    paths: list[Path] = []

    def load(path: Path, **options: object) -> FakeEngine:
        paths.append(Path(path))
        return FakeEngine()

    monkeypatch.setattr("gptcli.engines.local.load_local_engine", load)
    return paths


def split_gguf(source: Path, out: Path, parts: int) -> list[Path]:
    """Re-write a real GGUF as ``parts`` split files (``-00001-of-0000N.gguf``), as llama.cpp's gguf-split does."""
    import gguf

    reader = gguf.GGUFReader(source)
    out.parent.mkdir(parents=True, exist_ok=True)
    arch = reader.fields["general.architecture"].contents()
    per_part = -(-len(reader.tensors) // parts)
    writer = gguf.GGUFWriter(out, arch, split_max_tensors=per_part)
    for f in reader.fields.values():
        if f.name == gguf.Keys.General.ARCHITECTURE or f.name.startswith("GGUF."):
            continue
        value_type = f.types[0]
        sub_type = f.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(f.name, f.contents(), value_type, sub_type=sub_type)
    for t in reader.tensors:
        writer.add_tensor(t.name, t.data, raw_shape=t.data.shape, raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return sorted(out.parent.glob(f"{out.stem}-*-of-*.gguf"))
