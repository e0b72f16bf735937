"""Prompt templates: TOML files in ``prompts/`` (shipped) and the user's ``templates/`` folder."""

from __future__ import annotations

import os
import re
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from gptcli.config import config_dir
from gptcli.engines import Message
from gptcli.errors import TemplateError

# one pass over the text: a doubled brace, or a {name} placeholder; nothing else is special
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TEMPLATE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")

BUILTIN = "built-in"
USER = "user"

# a template is a few kB; a larger file is refused without being read, so a 100 MB file in the
# templates folder cannot slow every command down
MAX_TEMPLATE_BYTES = 1_000_000

KNOWN_KEYS = ("name", "description", "system", "user", "input", "variables", "examples", "temperature", "max_tokens", "schema", "edits")


def render_text(text: str, values: Mapping[str, str]) -> str:
    """Substitute ``{name}`` placeholders and nothing else; ``{{``/``}}`` are literal braces.

    One regular-expression pass, no ``eval``, no ``str.format``: values are inserted as they are
    and never re-scanned, so ``{__class__}`` or ``{0}`` inside user input stays literal text.
    """

    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        name = match.group(1)
        if name not in values:
            raise TemplateError(f"template uses an undeclared variable {{{name}}}")
        return values[name]

    return _PLACEHOLDER.sub(replace, text)


def placeholders(text: str) -> set[str]:
    """The variable names a template text uses."""
    return {m.group(1) for m in _PLACEHOLDER.finditer(text) if m.group(1)}


def stray_brace(text: str) -> tuple[int, str] | None:
    """The first single ``{`` or ``}`` that is neither doubled nor part of a ``{name}``: (line, snippet)."""
    pos = 0
    for match in _PLACEHOLDER.finditer(text):
        gap = text[pos : match.start()]
        for brace in "{}":
            if brace in gap:
                at = pos + gap.index(brace)
                return text.count("\n", 0, at) + 1, text[at : at + 20].split("\n")[0]
        pos = match.end()
    rest = text[pos:]
    for brace in "{}":
        if brace in rest:
            at = pos + rest.index(brace)
            return text.count("\n", 0, at) + 1, text[at : at + 20].split("\n")[0]
    return None


def valid_template_name(name: str) -> bool:
    """Names are file stems: letters, digits, ``-`` and ``_``, starting with a letter or digit."""
    return bool(_TEMPLATE_NAME.fullmatch(name))


@dataclass(frozen=True)
class Variable:
    """A declared template variable; no default means the user must give it with ``-v``."""

    name: str
    description: str = ""
    default: str | None = None

    @property
    def required(self) -> bool:
        return self.default is None


@dataclass(frozen=True)
class Template:
    """A prompt template: system prompt, user prompt with ``{input}``, variables and defaults."""

    name: str
    description: str
    system: str
    user: str = "{input}"
    variables: tuple[Variable, ...] = ()
    examples: tuple[Message, ...] = ()
    temperature: float | None = None
    max_tokens: int | None = None
    source: str = BUILTIN
    path: Path | None = None
    input_required: bool = True
    schema: dict[str, Any] | None = None  # the JSON Schema replies follow (a ``schema`` table or string)
    edits: bool = False  # the reply repeats much of its input (proofread, rewrite): speculative decoding pays on a GPU

    def variable(self, name: str) -> Variable | None:
        return next((v for v in self.variables if v.name == name), None)

    def values(self, given: Mapping[str, str]) -> dict[str, str]:
        """Merge given values with defaults; unknown or missing variables are errors."""
        declared = {v.name: v for v in self.variables}
        unknown = sorted(set(given) - set(declared))
        if unknown:
            known = ", ".join(sorted(declared)) or "none"
            names = ", ".join(f"'{u}'" for u in unknown)
            word = "variable" if len(unknown) == 1 else "variables"
            raise TemplateError(f"template '{self.name}' has no {word} {names} (variables: {known})")
        values = {name: v.default for name, v in declared.items() if v.default is not None}
        values.update(given)
        missing = [v for v in self.variables if v.name not in values]
        if missing:
            need = "; ".join(f"{v.name}: {v.description}" if v.description else v.name for v in missing)
            raise TemplateError(
                f"template '{self.name}' needs {', '.join('-v ' + v.name + '=...' for v in missing)} ({need})"
            )
        return values

    def render(self, input_text: str, given: Mapping[str, str] | None = None) -> list[Message]:
        """The messages for one request: system, few-shot examples, then the user prompt."""
        values = self.values(given or {})
        values["input"] = input_text
        messages: list[Message] = []
        system = render_text(self.system, values).strip()
        if system:
            messages.append({"role": "system", "content": system})
        for example in self.examples:
            messages.append({"role": example["role"], "content": render_text(example["content"], values)})
        messages.append({"role": "user", "content": render_text(self.user, values).strip()})
        return messages


def parse_template(name: str, text: str, *, source: str, path: Path | None = None) -> Template:
    """Build a ``Template`` from TOML text, validating its shape. Errors name the file."""
    where = str(path) if path else f"template '{name}'"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TemplateError(f"{where}: {exc}") from None
    unknown = sorted(set(data) - set(KNOWN_KEYS))
    if unknown:
        raise TemplateError(f"{where}: unknown key '{unknown[0]}' (known: {', '.join(KNOWN_KEYS)})")

    def text_field(key: str, default: str) -> str:
        value = data.get(key, default)
        if not isinstance(value, str):
            raise TemplateError(f"{where}: '{key}' must be a string")
        return value

    text_field("name", name)  # informational: the file name is the template's name
    variables: list[Variable] = []
    raw_vars = data.get("variables", {})
    if not isinstance(raw_vars, dict):
        raise TemplateError(f"{where}: [variables] must be a table")
    for vname, spec in raw_vars.items():
        if vname == "input":
            raise TemplateError(f"{where}: 'input' is reserved for the text being processed")
        if not _IDENTIFIER.fullmatch(vname):
            raise TemplateError(f"{where}: variable name '{vname}' must be letters, digits and _ (not starting with a digit)")
        if isinstance(spec, str):
            spec = {"description": spec}
        if not isinstance(spec, dict):
            raise TemplateError(f"{where}: variable '{vname}' must be a table or a description string")
        extra = sorted(set(spec) - {"description", "default"})
        if extra:
            raise TemplateError(f"{where}: variable '{vname}' has an unknown key '{extra[0]}' (known: description, default)")
        default = spec.get("default")
        if default is not None and (isinstance(default, bool) or not isinstance(default, str | int | float)):
            raise TemplateError(f"{where}: default of '{vname}' must be a string")
        if not isinstance(spec.get("description", ""), str):
            raise TemplateError(f"{where}: description of '{vname}' must be a string")
        variables.append(Variable(vname, str(spec.get("description", "")), None if default is None else str(default)))

    examples: list[Message] = []
    raw_examples = data.get("examples", [])
    if not isinstance(raw_examples, list):
        raise TemplateError(f"{where}: examples must be an array of tables ([[examples]])")
    for ex in raw_examples:
        if not isinstance(ex, dict) or ex.get("role") not in ("user", "assistant") or not isinstance(ex.get("content"), str):
            raise TemplateError(f"{where}: each [[examples]] needs role = \"user\" or \"assistant\" and a content string")
        examples.append({"role": ex["role"], "content": ex["content"]})

    for key in ("temperature", "max_tokens"):
        if key in data and (isinstance(data[key], bool) or not isinstance(data[key], int | float)):
            raise TemplateError(f"{where}: '{key}' must be a number")
    if "temperature" in data and not 0 <= data["temperature"] <= 5:
        raise TemplateError(f"{where}: 'temperature' must be between 0 and 5")
    if "max_tokens" in data and (not isinstance(data["max_tokens"], int) or data["max_tokens"] <= 0):
        raise TemplateError(f"{where}: 'max_tokens' must be a positive whole number")
    for key in ("input", "edits"):
        if key in data and not isinstance(data[key], bool):
            raise TemplateError(f"{where}: '{key}' must be true or false")

    schema: dict[str, Any] | None = None
    if "schema" in data:
        raw_schema = data["schema"]
        if isinstance(raw_schema, dict):
            schema = raw_schema
        elif isinstance(raw_schema, str):
            from gptcli.schema import SchemaError, schema_from_text

            try:
                schema = schema_from_text(raw_schema, f"{where}: schema")
            except SchemaError as exc:
                raise TemplateError(f"{where}: {exc}" if not str(exc).startswith(where) else str(exc)) from None
        else:
            raise TemplateError(f"{where}: 'schema' must be a table (a JSON Schema) or a string ('name, age int, bio: a short bio')")

    template = Template(
        name=name,
        description=text_field("description", ""),
        system=text_field("system", ""),
        user=text_field("user", "{input}"),
        variables=tuple(variables),
        examples=tuple(examples),
        temperature=float(data["temperature"]) if "temperature" in data else None,
        max_tokens=int(data["max_tokens"]) if "max_tokens" in data else None,
        source=source,
        path=path,
        input_required=bool(data.get("input", True)),
        schema=schema,
        edits=bool(data.get("edits", False)),
    )
    declared = {v.name for v in variables} | {"input"}
    parts = [("system", template.system), ("user", template.user)]
    parts += [(f"examples[{i}]", e["content"]) for i, e in enumerate(examples)]
    for part_name, part in parts:
        undeclared = sorted(placeholders(part) - declared)
        if undeclared:
            raise TemplateError(
                f"{where}: {part_name} uses {{{undeclared[0]}}} but [variables] declares no '{undeclared[0]}'"
            )
        stray = stray_brace(part)
        if stray:
            line, snippet = stray
            raise TemplateError(
                f"{where}: {part_name}, line {line}: single brace in '{snippet}'"
                " (write {{ and }} for literal braces, {name} for a variable)"
            )
    if template.input_required and "input" not in placeholders(template.user) | placeholders(template.system):
        raise TemplateError(f"{where}: the user prompt must contain {{input}} (or set input = false)")
    if not template.user.strip():
        raise TemplateError(f"{where}: 'user' must not be empty")
    return template


def builtin_dir() -> Path:
    """The shipped templates: inside the installed package, or ``prompts/`` in a source tree."""
    try:
        packaged = resources.files("gptcli") / "prompts"
        if packaged.is_dir():
            return Path(str(packaged))
    except (ModuleNotFoundError, TypeError):  # pragma: no cover - unusual import setups
        pass
    return Path(__file__).resolve().parent.parent / "prompts"


def user_dir() -> Path:
    """The user's templates: ``templates/`` in the config folder; they add to or override built-ins."""
    return config_dir() / "templates"


@dataclass(frozen=True)
class TemplateEntry:
    """One name in the library as ``templates list`` shows it: the template in use, or its error."""

    name: str
    source: str  # built-in | user
    path: Path
    template: Template | None = None
    error: TemplateError | None = None
    overrides: bool = False  # a user file shadowing a built-in of the same name

    @property
    def description(self) -> str:
        return self.template.description if self.template else ""


@dataclass
class TemplateLibrary:
    """Shipped templates overridden by the user's; broken files are reported, not fatal to others.

    A broken user file that shadows a built-in makes that name an error (naming the file) rather
    than silently falling back: the user meant their version.
    """

    templates: dict[str, Template] = field(default_factory=dict)
    broken: dict[str, TemplateError] = field(default_factory=dict)
    entries: dict[str, TemplateEntry] = field(default_factory=dict)

    @classmethod
    def load(cls, folders: list[tuple[Path, str]] | None = None, *, only: str | None = None) -> TemplateLibrary:
        """Every template of ``folders`` (the shipped ones, then the user's); ``only`` reads just that name's files."""
        library = cls()
        for folder, source in folders or [(builtin_dir(), BUILTIN), (user_dir(), USER)]:
            if not folder.is_dir():
                continue
            paths = [folder / f"{only}.toml"] if only is not None else sorted(folder.glob("*.toml"))
            for path in paths:
                if only is not None and not os.path.lexists(path):
                    continue
                name = path.stem
                overrides = name in library.entries
                try:
                    text = read_template_file(path)
                    if not valid_template_name(name):
                        raise TemplateError(f"{path}: a template name uses only letters, digits, - and _")
                    template = parse_template(name, text, source=source, path=path)
                except TemplateError as exc:
                    library.templates.pop(name, None)
                    library.broken[name] = exc
                    library.entries[name] = TemplateEntry(name, source, path, error=exc, overrides=overrides)
                    continue
                library.templates[name] = template
                library.broken.pop(name, None)
                library.entries[name] = TemplateEntry(name, source, path, template=template, overrides=overrides)
        return library

    def names(self, *, usable: bool = False) -> list[str]:
        """Every name, sorted; ``usable`` leaves out the broken files (which ``templates list`` shows with their error)."""
        return sorted(self.templates if usable else self.entries)

    def get(self, name: str) -> Template:
        if name in self.templates:
            return self.templates[name]
        if name in self.broken:
            raise self.broken[name]
        known = ", ".join(self.names(usable=True)) or "none"
        raise TemplateError(f"unknown template '{name}' (templates: {known}; see `gptcli templates list`)")


def read_template_file(path: Path) -> str:
    """A template file's text: a regular file of at most ``MAX_TEMPLATE_BYTES``, else a ``TemplateError``.

    The type and size are checked before the file is opened: a FIFO named ``x.toml`` would block
    for ever, a device never ends, and a huge file would be read by every command.
    """
    try:
        info = path.stat()
    except OSError as exc:
        raise TemplateError(f"{path}: cannot read it: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise TemplateError(f"{path}: not a regular file (a FIFO, device or folder), so it is not read")
    if info.st_size > MAX_TEMPLATE_BYTES:
        raise TemplateError(
            f"{path}: {info.st_size // 1_000_000} MB is too large for a template (at most {MAX_TEMPLATE_BYTES // 1_000_000} MB)"
        )
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # replaced by a FIFO since: still no wait
        with os.fdopen(fd, "rb") as f:
            data = f.read(MAX_TEMPLATE_BYTES + 1)
    except OSError as exc:
        raise TemplateError(f"{path}: cannot read it: {exc.strerror}") from None
    if len(data) > MAX_TEMPLATE_BYTES:
        raise TemplateError(f"{path}: too large for a template (at most {MAX_TEMPLATE_BYTES // 1_000_000} MB)")
    try:
        return data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")  # as a text-mode read would
    except UnicodeDecodeError:
        raise TemplateError(f"{path}: not UTF-8 text") from None


def template_names(*, usable: bool = False) -> list[str]:
    """The names of the shipped and the user's templates, sorted; ``usable`` leaves out broken files."""
    return TemplateLibrary.load().names(usable=usable)


def load_template(name: str) -> Template:
    """The template called ``name``, reading only its own files (the others' errors are not its concern)."""
    if valid_template_name(name):
        library = TemplateLibrary.load(only=name)
        if name in library.entries:
            return library.get(name)
    return TemplateLibrary.load().get(name)  # unknown: the full library names what exists


def parse_vars(pairs: list[str] | None) -> dict[str, str]:
    """``-v key=value`` options into a dict (a later value for the same key wins)."""
    values: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise TemplateError(f"-v expects key=value, got '{pair}'")
        values[key.strip()] = value
    return values


def scaffold(name: str) -> str:
    """The commented starting point that ``gptcli templates new NAME`` writes."""
    return f'''# gptcli prompt template "{name}".
# Use it with:  gptcli ask -t {name} "your text"   (or: cat file.txt | gptcli ask -t {name})
# Check it with: gptcli templates show {name}
#
# Placeholders: {{input}} is the text you give; {{name}} is a variable declared under [variables]
# and set with -v name=value. Write {{{{ and }}}} for literal braces. Nothing else is evaluated.

description = "One line saying what this template does."

# The instructions the model follows. Leave it out for no system prompt.
system = """You are a careful assistant. Answer in {{style}} style.
Reply in the language of the user's text."""

# The user message. It must contain {{input}} (or set `input = false` for a template needing no input).
user = """{{input}}"""

# Optional sampling defaults; flags, environment variables and the config file win over them.
# temperature = 0.7
# max_tokens = 512

[variables]
# name = {{ description = "what it means", default = "used when -v name=... is not given" }}
# A variable without a default must be given with -v.
style = {{ description = "how the answer should read", default = "plain, concise" }}

# Optional few-shot examples, sent before your text, in order:
# [[examples]]
# role = "user"
# content = "An example input."
#
# [[examples]]
# role = "assistant"
# content = "The reply you want for it."
'''
