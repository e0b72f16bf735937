"""The Hugging Face Hub: choosing a GGUF file in a repository, resumable downloads into the Hub cache."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any
from urllib.parse import urlsplit

from gptcli.errors import GptcliError, Interrupted, ModelError, UsageError
from gptcli.textio import user_path

log = logging.getLogger("gptcli.hub")

DEFAULT_ENDPOINT = "https://huggingface.co"
DEFAULT_REVISION = "main"

# The order a quantization is picked in when none is asked for: the 4-bit K-quants first (the usual
# size/quality sweet spot), then 5-bit, the older 4-bit formats, then larger and smaller ones.
QUANT_PREFERENCE = (
    "Q4_K_M", "Q4_K_S", "Q5_K_M", "Q5_K_S", "Q4_0", "IQ4_XS", "IQ4_NL", "Q4_1", "Q6_K", "Q8_0",
    "Q5_0", "Q5_1", "Q4_K_L", "Q5_K_L", "Q6_K_L", "Q3_K_L", "Q3_K_M", "IQ3_M", "Q3_K_S", "IQ3_XS",
    "Q2_K", "Q2_K_L", "IQ2_M", "BF16", "F16", "F32",
)
_QUANT_TOKEN = re.compile(r"^(?:UD-)?((?:I?Q[1-8](?:_[0-9A-Z]+)*)|BF16|F16|FP16|F32|FP32|MXFP4(?:_MOE)?|TQ[12]_0)$")
SPLIT_NAME = re.compile(r"^(?P<base>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# an ETag names a blob file in the cache: git object ids, SHA-256 sums and the like, nothing that
# could be a path (no '/', '\\', '..' or leading dot) and nothing that is not plain ASCII
_ETAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")


# ---------------------------------------------------------------- environment, read at call time

def endpoint() -> str:
    """The Hub's address: ``HF_ENDPOINT`` as it is now (huggingface_hub reads it once, at import)."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def offline_mode(flag: bool = False) -> bool:
    """``--offline`` or ``HF_HUB_OFFLINE=1``: nothing may make a request."""
    return flag or _truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(os.environ.get("TRANSFORMERS_OFFLINE"))


def cache_dir() -> Path:
    """The standard Hub cache: ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if value := os.environ.get(name):
            return user_path(os.path.expandvars(value))
    if home := os.environ.get("HF_HOME"):
        return user_path(os.path.expandvars(home)) / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return user_path(xdg) / "huggingface" / "hub"


def repo_folder(repo_id: str, cache: Path | None = None) -> Path:
    """Where the Hub cache keeps one model repository (``models--owner--name``)."""
    return (cache or cache_dir()) / ("models--" + repo_id.replace("/", "--"))


def is_repo_id(text: str) -> bool:
    return bool(_REPO_ID.match(text))


def check_repo_id(repo_id: str) -> str:
    repo_id = repo_id.strip().strip("/")
    if repo_id.startswith(("https://", "http://")):  # a pasted page address
        parts = urlsplit(repo_id).path.strip("/").split("/")
        repo_id = "/".join(parts[:2])
    if not is_repo_id(repo_id):
        raise UsageError(f"'{repo_id}' is not a Hub repository id: use OWNER/NAME (for example bartowski/SmolLM2-135M-Instruct-GGUF)")
    return repo_id


# ---------------------------------------------------------------- picking a file

def quant_of(filename: str) -> str | None:
    """The quantization named in a GGUF file name (``...-Q4_K_M.gguf`` -> ``Q4_K_M``), if any."""
    name = PurePosixPath(filename).name
    match = SPLIT_NAME.match(name)
    stem = match["base"] if match else re.sub(r"\.gguf$", "", name, flags=re.IGNORECASE)
    for token in reversed(re.split(r"[-.]", stem.upper())):
        if m := _QUANT_TOKEN.match(token):
            q = m.group(0).removeprefix("UD-")
            return {"FP16": "F16", "FP32": "F32"}.get(q, q)
    # folders named after the quantization ("Q4_K_M/model-00001-of-00002.gguf")
    for part in reversed(PurePosixPath(filename).parts[:-1]):
        if m := _QUANT_TOKEN.match(part.upper()):
            return m.group(0)
    return None


@dataclass(frozen=True)
class RemoteFile:
    """A file in a Hub repository, as its tree listing describes it."""

    path: str
    size: int
    sha256: str | None = None  # LFS files: the content's hash, also their cache blob name


@dataclass(frozen=True)
class GGUFModelFiles:
    """One loadable model in a repository: a single GGUF, or all the parts of a split one."""

    parts: tuple[RemoteFile, ...]
    quant: str | None

    @property
    def first(self) -> str:
        return self.parts[0].path

    @property
    def size(self) -> int:
        return sum(p.size for p in self.parts)

    @property
    def is_projector(self) -> bool:
        """A vision projector (``mmproj``), not a language model on its own."""
        return "mmproj" in PurePosixPath(self.first).name.lower()


def group_gguf_files(files: list[RemoteFile]) -> tuple[list[GGUFModelFiles], list[str]]:
    """GGUF files grouped into models (split parts together, in order); also the incomplete split sets."""
    singles: list[GGUFModelFiles] = []
    splits: dict[tuple[str, str, int], dict[int, RemoteFile]] = {}
    for f in files:
        if not f.path.lower().endswith(".gguf"):
            continue
        name = PurePosixPath(f.path)
        match = SPLIT_NAME.match(name.name)
        if match:
            key = (str(name.parent), match["base"], int(match["count"]))
            splits.setdefault(key, {})[int(match["index"])] = f
        else:
            singles.append(GGUFModelFiles((f,), quant_of(f.path)))
    incomplete: list[str] = []
    for (_, _, count), parts in splits.items():
        ordered = [parts.get(i) for i in range(1, count + 1)]
        if any(p is None for p in ordered):
            first = next(p for p in ordered if p is not None)
            incomplete.append(f"{first.path} ({len(parts)} of {count} parts in the repository)")
            continue
        singles.append(GGUFModelFiles(tuple(p for p in ordered if p is not None), quant_of(ordered[0].path)))  # type: ignore[union-attr]
    singles.sort(key=lambda m: m.first)
    return singles, incomplete


@dataclass(frozen=True)
class Choice:
    """The model picked in a repository and why."""

    model: GGUFModelFiles
    reason: str


def format_size(n: int | float) -> str:
    """Bytes for people: ``98.1 MB``."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def choose_gguf(
    repo_id: str, models: list[GGUFModelFiles], *, file: str | None = None, quant: str | None = None
) -> Choice:
    """Pick the file to download: ``--file``, else ``--quant``, else the first of QUANT_PREFERENCE present."""
    if not models:
        raise ModelError(f"repository '{repo_id}' has no GGUF files (gptcli runs GGUF models; look for a '-GGUF' repository)")
    if file:
        wanted = file.strip().lstrip("/")
        for m in models:
            if any(p.path == wanted for p in m.parts):
                return Choice(m, "asked for with --file")
        by_name = [m for m in models if any(PurePosixPath(p.path).name == wanted for p in m.parts)]
        if len(by_name) == 1:
            return Choice(by_name[0], "asked for with --file")
        raise ModelError(
            f"repository '{repo_id}' has no GGUF file '{wanted}'; its GGUF files: "
            + ", ".join(m.first for m in models[:12])
            + (" ..." if len(models) > 12 else "")
        )
    candidates = [m for m in models if not m.is_projector] or models
    if quant:
        q = quant.strip().upper()
        q = {"FP16": "F16", "FP32": "F32"}.get(q, q)
        hits = [m for m in candidates if (m.quant or "").upper() == q]
        if not hits:
            have = sorted({m.quant for m in candidates if m.quant})
            raise ModelError(
                f"repository '{repo_id}' has no {q} file; quantizations available: {', '.join(have) or 'none named'}"
            )
        if len(hits) > 1:
            raise ModelError(
                f"several {q} files in '{repo_id}': {', '.join(m.first for m in hits)}; pick one with --file"
            )
        return Choice(hits[0], "asked for with --quant")
    if len(candidates) == 1:
        only = candidates[0]
        return Choice(only, "the only GGUF model in the repository")
    present = {(m.quant or "").upper(): m for m in reversed(candidates)}
    for rank, q in enumerate(QUANT_PREFERENCE):
        if q in present:
            chosen = present[q]
            same = [m for m in candidates if (m.quant or "").upper() == q]
            if len(same) > 1:
                chosen = min(same, key=lambda m: (len(m.parts), m.size))
            if rank == 0:
                why = "the default choice (a 4-bit K-quant: a good balance of size and quality)"
            else:
                missing = ", ".join(QUANT_PREFERENCE[:rank][:3]) + (" ..." if rank > 3 else "")
                why = f"no {missing} in the repository; next in the preference order ({' > '.join(QUANT_PREFERENCE[:4])} > ...)"
            return Choice(chosen, why)
    names = ", ".join(m.first for m in candidates[:12])
    raise ModelError(f"cannot tell which file to pull from '{repo_id}' ({names}): pick one with --file")


# ---------------------------------------------------------------- talking to the Hub (huggingface_hub, lazily)

def _hf() -> Any:
    """Import huggingface_hub, in step with the environment as it is now (it reads HF_HUB_OFFLINE at import)."""
    import logging

    import huggingface_hub
    from huggingface_hub import constants

    constants.HF_HUB_OFFLINE = offline_mode()
    # its retry warnings would interleave with our own messages; --verbose shows them
    verbose = logging.getLogger("gptcli").isEnabledFor(logging.DEBUG)
    logging.getLogger("huggingface_hub").setLevel(logging.DEBUG if verbose else logging.ERROR)
    return huggingface_hub


def _token_present() -> bool:
    try:
        from huggingface_hub import get_token

        return get_token() is not None
    except Exception:
        return bool(os.environ.get("HF_TOKEN"))


def _scrub(text: str) -> str:
    """Hide any token in a message: a token is never printed."""
    secrets = [os.environ.get("HF_TOKEN"), os.environ.get("HUGGING_FACE_HUB_TOKEN")]
    with contextlib.suppress(Exception):
        from huggingface_hub import get_token

        secrets.append(get_token())
    from gptcli.textio import sanitize_terminal

    for secret in secrets:
        if secret and len(secret) >= 4:  # in any letter case: a server may echo it upper-cased
            text = re.sub(re.escape(secret), "***", text, flags=re.IGNORECASE)
    text = re.sub(r"(?i)(bearer\s+)[A-Za-z0-9_\-.]{6,}", r"\1***", text)
    return sanitize_terminal(text)  # the server's words: no escape sequences reach a terminal


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def hub_error(exc: BaseException, repo_id: str, *, filename: str | None = None, revision: str = DEFAULT_REVISION) -> GptcliError:
    """One clear line for whatever huggingface_hub or the network raised."""
    from huggingface_hub import errors as hf_errors

    where = endpoint()
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, hf_errors.OfflineModeIsEnabled):
        return ModelError(_offline_message(repo_id))
    if isinstance(exc, hf_errors.GatedRepoError):
        if _token_present():
            return ModelError(
                f"repository '{repo_id}' is gated and your token has no access to it: request access at {where}/{repo_id}"
            )
        return ModelError(
            f"repository '{repo_id}' is gated: accept its terms at {where}/{repo_id}, then set HF_TOKEN to an access token"
        )
    if isinstance(exc, hf_errors.RepositoryNotFoundError):
        hint = "" if _token_present() else " (if it is private, set HF_TOKEN)"
        return ModelError(f"repository '{repo_id}' was not found on {where}{hint}")
    if isinstance(exc, hf_errors.RevisionNotFoundError):
        return ModelError(f"revision '{revision}' was not found in repository '{repo_id}'")
    if isinstance(exc, hf_errors.RemoteEntryNotFoundError):
        return ModelError(f"file '{filename or '?'}' was not found in repository '{repo_id}'")
    if isinstance(exc, hf_errors.HfHubHTTPError) and status == 401:
        return ModelError(f"the Hub refused the token (401) for '{repo_id}': check HF_TOKEN")
    if isinstance(exc, hf_errors.HfHubHTTPError) and status == 403:
        return ModelError(f"access to '{repo_id}' is forbidden (403): check that your token may read it")
    if isinstance(exc, hf_errors.HfHubHTTPError):
        return ModelError(_scrub(f"the Hub answered {status or 'an error'} for '{repo_id}': {_first_line(exc)}"))
    # the HTTP client's own classes (httpx2 today; httpx or requests in other huggingface_hub versions)
    kinds = {cls.__name__ for cls in type(exc).__mro__}
    if "ProxyError" in kinds:
        return ModelError(f"the proxy refused the connection to {where}: {_scrub(_first_line(exc))}")
    if any("Timeout" in name for name in kinds):
        return ModelError(f"the Hub at {where} did not answer in time; check your connection and try again")
    if kinds & {"ConnectError", "ConnectionError", "NetworkError"}:
        return ModelError(f"cannot reach the Hub at {where}: {_scrub(_first_line(exc))}; check your connection (or HF_ENDPOINT)")
    return ModelError(_scrub(f"pulling '{repo_id}' failed: {_first_line(exc)}"))


def _offline_message(repo_id: str) -> str:
    return (
        f"cannot pull '{repo_id}': offline mode is on (HF_HUB_OFFLINE=1 or --offline); "
        "models already pulled keep working"
    )


@dataclass(frozen=True)
class RepoListing:
    """What the Hub says about a repository at one revision."""

    repo_id: str
    revision: str
    commit: str
    files: list[RemoteFile]
    gated: bool = False


def list_repo(repo_id: str, revision: str = DEFAULT_REVISION) -> RepoListing:
    """The repository's commit for ``revision`` and its file tree (``/api/models/{repo}/revision``, ``/tree``)."""
    hf = _hf()
    api = hf.HfApi(endpoint=endpoint(), library_name="gptcli")
    try:
        info = api.model_info(repo_id, revision=revision)
        commit = check_server_name("commit", str(info.sha or revision), repo_id)
        files: list[RemoteFile] = []
        for entry in api.list_repo_tree(repo_id, revision=commit, recursive=True):
            if not hasattr(entry, "size"):
                continue  # a folder
            try:
                check_server_name("file", str(entry.path), repo_id)
            except ModelError:
                log.warning("skipped a file with an unsafe name in %s: %r", repo_id, entry.path)
                continue  # never offered, never a path
            lfs = getattr(entry, "lfs", None)
            files.append(RemoteFile(entry.path, int(entry.size or 0), getattr(lfs, "sha256", None)))
    except GptcliError:
        raise
    except Exception as exc:
        raise hub_error(exc, repo_id, revision=revision) from None
    return RepoListing(repo_id, revision, commit, files, gated=bool(getattr(info, "gated", False)))


ProgressFactory = Callable[..., Any]


def progress_bar_class(stream: IO[str] | None) -> ProgressFactory | None:
    """A tqdm bar class writing to ``stream`` (a terminal), or ``None`` for no bar."""
    if stream is None:
        return None
    from tqdm import tqdm

    class DownloadBar(tqdm):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.pop("name", None)
            kwargs.update(file=stream, disable=False, dynamic_ncols=True, leave=True, mininterval=0.2)
            super().__init__(*args, **kwargs)

    return DownloadBar


class _NoBar:
    """Stands in for a progress bar off a terminal: counts nothing, prints nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


@dataclass
class DownloadedFile:
    """One file fetched (or found) in the Hub cache."""

    repo_path: str
    local_path: Path  # the snapshot path (a link to the blob)
    blob: Path | None
    size: int
    downloaded: int = 0  # bytes transferred by this pull
    resumed_from: int = 0  # bytes already there from a cut-off pull
    already_cached: bool = False


def _same_origin(a: str, b: str) -> bool:
    pa, pb = urlsplit(a), urlsplit(b)
    ports = {"http": 80, "https": 443}
    return (pa.scheme, pa.hostname, pa.port or ports.get(pa.scheme)) == (pb.scheme, pb.hostname, pb.port or ports.get(pb.scheme))


def _unsafe(what: str, value: str, repo_id: str) -> ModelError:
    shown = value if len(value) <= 80 else value[:77] + "..."
    return ModelError(
        f"the Hub sent an unsafe {what} {shown!r} for '{repo_id}'; nothing was downloaded (is HF_ENDPOINT a Hub you trust?)"
    )


def check_server_name(kind: str, value: str, repo_id: str) -> str:
    """A name the server chose (``etag``, ``commit``, ``file``), checked before it becomes part of a path."""
    if kind == "etag":
        ok = bool(_ETAG.match(value))
    elif kind == "commit":
        ok = bool(_COMMIT.match(value))
    else:
        parts = value.split("/")
        ok = "\\" not in value and all(p not in ("", ".", "..") and p.isprintable() for p in parts)
    if not ok:
        raise _unsafe({"etag": "ETag", "commit": "commit id", "file": "file name"}.get(kind, kind), value, repo_id)
    return value


def _inside(path: Path, root: Path, repo_id: str) -> Path:
    """``path``, after checking that it resolves inside ``root`` (links and '..' followed)."""
    resolved, base = path.resolve(), root.resolve()
    if resolved != base and base not in resolved.parents:
        raise _unsafe("path", str(path), repo_id)
    return path


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def download_file(
    repo_id: str,
    filename: str,
    commit: str,
    *,
    revision: str = DEFAULT_REVISION,
    progress: ProgressFactory | None = None,
    notice: Callable[[str], None] = lambda _: None,
) -> DownloadedFile:
    """Fetch one file into the standard Hub cache, resuming a cut-off earlier download with HTTP Range.

    huggingface_hub's own ``hf_hub_download`` throws away a partial file when a download fails, so the
    blob is fetched here into ``blobs/<etag>.incomplete`` (kept on failure, continued next time), then
    linked into ``snapshots/<commit>/`` exactly as huggingface_hub links its own downloads. Every
    name the server chose is checked before it becomes part of a path.
    """
    hf = _hf()
    from huggingface_hub.file_download import get_hf_file_metadata, hf_hub_url

    from gptcli import __version__
    from gptcli.compat import hf_file_lock, hf_headers, hf_http_get

    ep = endpoint()
    cache = cache_dir()
    folder = repo_folder(repo_id, cache)
    check_server_name("commit", commit, repo_id)
    check_server_name("file", filename, repo_id)
    try:
        url = hf_hub_url(repo_id, filename, revision=commit, endpoint=ep)
        meta = get_hf_file_metadata(url, endpoint=ep, library_name="gptcli", library_version=__version__)
    except Exception as exc:
        raise hub_error(exc, repo_id, filename=filename, revision=revision) from None
    if not meta.etag:
        raise ModelError(f"the Hub sent no ETag for '{filename}' in '{repo_id}'; cannot cache it safely")
    check_server_name("etag", meta.etag, repo_id)
    blob = _inside(folder / "blobs" / meta.etag, cache, repo_id)
    pointer = _inside(folder / "snapshots" / commit / Path(*PurePosixPath(filename).parts), cache, repo_id)
    result = DownloadedFile(filename, pointer, blob, meta.size or 0)
    if pointer.exists() and (meta.size is None or pointer.stat().st_size == meta.size):
        result.already_cached = True
        _write_ref(folder, revision, commit)
        return result

    incomplete = _inside(blob.with_name(blob.name + ".incomplete"), cache, repo_id)
    lock = _inside(cache / ".locks" / folder.name / f"{meta.etag}.lock", cache, repo_id)
    with hf_file_lock(lock):
        if blob.exists() and (meta.size is None or blob.stat().st_size == meta.size):
            result.already_cached = True
        else:
            blob.parent.mkdir(parents=True, exist_ok=True)
            headers = hf_headers(__version__)
            if not _same_origin(url, meta.location):
                headers.pop("authorization", None)  # a signed CDN address: the token stays with the Hub
            resume = incomplete.stat().st_size if incomplete.exists() else 0
            if meta.size is not None and resume > meta.size:
                incomplete.unlink()
                resume = 0
            if resume:
                notice(f"resuming {filename} at {format_size(resume)} of {format_size(meta.size or 0)}")
            result.resumed_from = resume
            with incomplete.open("ab") as out:
                start = out.tell()
                try:
                    hf_http_get(
                        meta.location,
                        out,
                        resume_size=resume,
                        headers=headers,
                        expected_size=meta.size,
                        displayed_filename=PurePosixPath(filename).name,
                        tqdm_class=progress or _NoBar,
                    )
                except KeyboardInterrupt:
                    out.flush()
                    raise Interrupted(
                        f"download of {filename} interrupted at {format_size(out.tell())}: pull again to resume"
                    ) from None
                except Exception as exc:
                    out.flush()
                    got = out.tell()
                    if isinstance(exc, hf.errors.HfHubHTTPError):
                        raise hub_error(exc, repo_id, filename=filename, revision=revision) from None
                    raise ModelError(
                        f"download of {filename} was cut off at {format_size(got)} of {format_size(meta.size or 0)}"
                        f" ({_scrub(_first_line(exc))}): run the same pull again to resume"
                    ) from None
                result.downloaded = out.tell() - start
            expected_hash = meta.etag if _SHA256.match(meta.etag) else None
            if expected_hash:
                notice(f"verifying the checksum of {filename}")
                actual = _sha256_of(incomplete)
                if actual != expected_hash:
                    incomplete.unlink(missing_ok=True)
                    raise ModelError(
                        f"the download of {filename} is corrupt (its SHA-256 does not match the Hub's); "
                        "it was deleted and nothing was registered: pull again"
                    )
            os.replace(incomplete, blob)
    _link_snapshot(blob, pointer)
    result.local_path = _inside(pointer, cache, repo_id)
    _write_ref(folder, revision, commit)
    return result


def _link_snapshot(blob: Path, pointer: Path) -> None:
    """``snapshots/<commit>/<file>`` -> ``../../blobs/<etag>``, the relative link huggingface_hub makes.

    Made here rather than by ``hf_hub_download``, which would ask the server again and build its
    paths from the second answer's ETag and commit: a server could name a checked blob first and
    ``../`` the second time. Where links are not allowed, the blob is copied (as huggingface_hub does).
    """
    pointer.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(pointer):
        if pointer.exists():
            return
        pointer.unlink()  # a dangling link from an earlier, deleted blob
    try:
        os.symlink(os.path.relpath(blob, pointer.parent), pointer)
    except OSError:
        shutil.copyfile(blob, pointer)


def _write_ref(folder: Path, revision: str, commit: str) -> None:
    """``refs/<revision>`` names the commit, as huggingface_hub records it, so offline lookups find it."""
    if revision == commit or _COMMIT.match(revision):
        return
    try:
        check_server_name("file", revision, folder.name)
        ref = _inside(folder / "refs" / revision, folder, folder.name)
    except ModelError:
        return  # a revision name that would leave the folder is not recorded
    with contextlib.suppress(OSError):
        if ref.is_file() and ref.read_text().strip() == commit:
            return
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(commit)


def forget_files(paths: list[Path]) -> None:
    """Delete files pulled into the Hub cache: their snapshot links, and the blobs nothing else links to."""
    folders: set[Path] = set()
    blobs: set[Path] = set()
    for path in paths:
        folder = _repo_folder_of(path)
        if folder is None:
            continue
        folders.add(folder)
        if path.is_symlink():
            blobs.add(Path(os.path.realpath(path)))
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    for folder in folders:
        still_linked = {
            Path(os.path.realpath(p)) for p in (folder / "snapshots").rglob("*") if p.is_symlink()
        }
        for blob in blobs:
            if blob.parent == folder / "blobs" and blob not in still_linked:
                with contextlib.suppress(FileNotFoundError):
                    blob.unlink()
        _prune(folder)


def _repo_folder_of(path: Path) -> Path | None:
    for parent in path.parents:
        if parent.name.startswith("models--") and (parent / "snapshots").is_dir():
            return parent
    return None


def _prune(folder: Path) -> None:
    """Remove empty snapshot folders; the whole repository folder once no file is left in it."""
    snapshots = folder / "snapshots"
    for sub in sorted(snapshots.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if sub.is_dir() and not sub.is_symlink():
            with contextlib.suppress(OSError):
                sub.rmdir()
    has_files = any(p.is_file() or p.is_symlink() for p in snapshots.rglob("*")) if snapshots.exists() else False
    blobs_left = any((folder / "blobs").iterdir()) if (folder / "blobs").is_dir() else False
    if not has_files and not blobs_left:
        shutil.rmtree(folder, ignore_errors=True)
        lock_folder = folder.parent / ".locks" / folder.name
        shutil.rmtree(lock_folder, ignore_errors=True)


# ---------------------------------------------------------------- the cache, read without any request

def cached_commit(repo_id: str, revision: str = DEFAULT_REVISION) -> str | None:
    """The commit ``refs/<revision>`` names in the cache (a commit hash names itself)."""
    folder = repo_folder(repo_id)
    if _COMMIT.match(revision):
        return revision if (folder / "snapshots" / revision).is_dir() else None
    ref = folder / "refs" / revision
    try:
        return ref.read_text().strip() or None
    except OSError:
        return None


def cached_gguf_models(repo_id: str, revision: str = DEFAULT_REVISION) -> list[tuple[GGUFModelFiles, Path]]:
    """GGUF models of a repository already in the Hub cache (snapshot of ``revision``): no request."""
    commit = cached_commit(repo_id, revision)
    if commit is None:
        return []
    snapshot = repo_folder(repo_id) / "snapshots" / commit
    if not snapshot.is_dir():
        return []
    files = []
    for path in snapshot.rglob("*"):
        if path.name.lower().endswith(".gguf") and path.is_file():
            files.append(RemoteFile(path.relative_to(snapshot).as_posix(), path.stat().st_size))
    models, _ = group_gguf_files(files)
    return [(m, snapshot / m.first) for m in models]
