"""Prompt templates: TOML files in ``prompts/`` (shipped) and the user's ``templates/`` folder."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path


from gptcli.config import config_dir
from gptcli.engines import Message
from gptcli.errors import TemplateError

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")


def render_text(text: str, values: Mapping[str, str]) -> str:
    """Substitute ``{name}`` placeholders and nothing else; ``{{``/``}}`` are literal braces.

    Values are inserted as they are, never re-scanned, so braces inside user input stay literal.
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
    return {m.group(1) for m in _PLACEHOLDER.finditer(text) if m.group(1)}


@dataclass(frozen=True)
class Variable:
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
    source: str = "built-in"
    path: Path | None = None
    input_required: bool = True

    def values(self, given: Mapping[str, str]) -> dict[str, str]:
        """Merge given values with defaults; unknown or missing variables are errors."""
        declared = {v.name: v for v in self.variables}
        unknown = sorted(set(given) - set(declared))
        if unknown:
            known = ", ".join(sorted(declared)) or "none"
            raise TemplateError(f"template '{self.name}' has no variable '{unknown[0]}' (variables: {known})")
        values = {name: v.default for name, v in declared.items() if v.default is not None}
        values.update(given)
        missing = [v for v in self.variables if v.name not in values]
        if missing:
            need = "; ".join(f"{v.name}: {v.description}" if v.description else v.name for v in missing)
            raise TemplateError(
                f"template '{self.name}' needs {', '.join('-v ' + v.name + '=...' for v in missing)} ({need})"
            )
        return values  # type: ignore[return-value]

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
    """Build a ``Template`` from TOML text, validating its shape."""
    where = str(path) if path else f"template '{name}'"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TemplateError(f"{where}: {exc}") from None
    known = {"name", "description", "system", "user", "variables", "examples", "temperature", "max_tokens", "input"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise TemplateError(f"{where}: unknown key '{unknown[0]}'")

    def text_field(key: str, default: str) -> str:
        value = data.get(key, default)
        if not isinstance(value, str):
            raise TemplateError(f"{where}: '{key}' must be a string")
        return value

    variables: list[Variable] = []
    raw_vars = data.get("variables", {})
    if not isinstance(raw_vars, dict):
        raise TemplateError(f"{where}: [variables] must be a table")
    for vname, spec in raw_vars.items():
        if vname == "input":
            raise TemplateError(f"{where}: 'input' is reserved for the text being processed")
        if isinstance(spec, str):
            spec = {"description": spec}
        if not isinstance(spec, dict):
            raise TemplateError(f"{where}: variable '{vname}' must be a table or a description string")
        default = spec.get("default")
        if default is not None and not isinstance(default, str | int | float):
            raise TemplateError(f"{where}: default of '{vname}' must be a string")
        variables.append(Variable(vname, str(spec.get("description", "")), None if default is None else str(default)))

    examples: list[Message] = []
    raw_examples = data.get("examples", [])
    if not isinstance(raw_examples, list):
        raise TemplateError(f"{where}: examples must be an array of tables")
    for ex in raw_examples:
        if not isinstance(ex, dict) or ex.get("role") not in ("user", "assistant") or not isinstance(ex.get("content"), str):
            raise TemplateError(f"{where}: each example needs role = 'user'|'assistant' and content")
        examples.append({"role": ex["role"], "content": ex["content"]})

    for key in ("temperature", "max_tokens"):
        if key in data and (isinstance(data[key], bool) or not isinstance(data[key], int | float)):
            raise TemplateError(f"{where}: '{key}' must be a number")
    template = Template(
        name=text_field("name", name) or name,
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
    )
    declared = {v.name for v in variables} | {"input"}
    for part in (template.system, template.user, *(e["content"] for e in examples)):
        undeclared = sorted(placeholders(part) - declared)
        if undeclared:
            raise TemplateError(f"{where}: uses {{{undeclared[0]}}} but declares no such variable")
    return template


def builtin_dir() -> Path:
    """The shipped templates: inside the installed package, or ``prompts/`` in a source tree."""
    packaged = resources.files("gptcli") / "prompts"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / "prompts"


def user_dir() -> Path:
    return config_dir() / "templates"


@dataclass
class TemplateLibrary:
    """Shipped templates overridden by the user's; broken files are reported, not fatal to others."""

    templates: dict[str, Template] = field(default_factory=dict)
    broken: dict[str, TemplateError] = field(default_factory=dict)

    @classmethod
    def load(cls, folders: list[tuple[Path, str]] | None = None) -> TemplateLibrary:
        library = cls()
        for folder, source in folders or [(builtin_dir(), "built-in"), (user_dir(), "user")]:
            if not folder.is_dir():
                continue
            for path in sorted(folder.glob("*.toml")):
                name = path.stem
                try:
                    text = path.read_text(encoding="utf-8")
                    library.templates[name] = parse_template(name, text, source=source, path=path)
                    library.broken.pop(name, None)
                except UnicodeDecodeError:
                    library.broken[name] = TemplateError(f"{path}: not UTF-8 text")
                except OSError as exc:
                    library.broken[name] = TemplateError(f"{path}: {exc.strerror}")
                except TemplateError as exc:
                    library.broken[name] = exc
        return library

    def get(self, name: str) -> Template:
        if name in self.templates:
            return self.templates[name]
        if name in self.broken:
            raise self.broken[name]
        known = ", ".join(sorted(self.templates)) or "none"
        raise TemplateError(f"unknown template '{name}' (templates: {known})")


def load_template(name: str) -> Template:
    return TemplateLibrary.load().get(name)


def parse_vars(pairs: list[str] | None) -> dict[str, str]:
    """``-v key=value`` options into a dict."""
    values: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise TemplateError(f"-v expects key=value, got '{pair}'")
        values[key.strip()] = value
    return values


