"""Structured output: JSON Schemas from files, inline JSON or the concise syntax, checked replies, grammars."""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gptcli.engines import Sampling, Usage
from gptcli.errors import EngineError, GptcliError, InputError
from gptcli.textio import user_path

# the concise syntax's types (the same words as `llm --schema`)
CONCISE_TYPES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")

# llama-cpp-python's converter lets a JSON string hold raw control characters (a newline, a tab),
# which JSON forbids; llama.cpp's own converter has since excluded them. Small models write a raw
# newline to "end" a string and then go on for ever, so the character class is narrowed here.
_LOOSE_CHAR = 'char ::= [^"\\\\] |'
_STRICT_CHAR = 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |'


class SchemaError(GptcliError):
    """A schema (``--schema``, a template's ``schema``) or grammar that cannot be used."""


class StructuredReplyError(EngineError):
    """A reply that is not the JSON its schema asks for (cut at the length limit, or invalid)."""


@dataclass(frozen=True)
class Structure:
    """What a reply must be: JSON valid against ``schema``, and/or text the GBNF ``grammar`` allows.

    ``--schema`` gives a schema (its grammar is made from it for the local engine); ``--grammar``
    gives raw GBNF, whose replies are text (no schema to parse or check them against).
    """

    schema: dict[str, Any] | None = None
    grammar: str | None = None

    @property
    def is_json(self) -> bool:
        return self.schema is not None

    def sampling(self, sampling: Sampling, *, local: bool) -> Sampling:
        """``sampling`` with the constraint: a GBNF grammar for the local engine, the schema for a server."""
        grammar = self.grammar
        if grammar is None and self.schema is not None and local:
            grammar = schema_grammar(self.schema)
        return dataclasses.replace(sampling, grammar=grammar if local else None, json_schema=self.schema)

    def check(self, text: str, usage: Usage | None) -> Any:
        """The reply's JSON value, checked against the schema; ``StructuredReplyError`` if it is not one."""
        assert self.schema is not None
        return check_reply(text, self.schema, usage)


# ---------------------------------------------------------------- reading a schema


def concise_schema(text: str) -> dict[str, Any]:
    """The concise syntax ``'name, age int, bio: a short bio'`` as a JSON Schema object.

    Fields are separated by commas, or by newlines when there are any (so descriptions may hold
    commas); each is ``NAME [TYPE][: description]`` with TYPE one of str (the default), int,
    float, bool. Every field is required, as in ``llm``.
    """
    separator = "\n" if "\n" in text else ","
    properties: dict[str, Any] = {}
    for raw in text.split(separator):
        field = raw.strip()
        if not field:
            continue
        head, colon, description = field.partition(":")
        words = head.split()
        if not words:
            raise SchemaError(f"schema field '{field}' has no name (the concise form is 'name, age int, bio: a short bio')")
        if len(words) > 2:
            raise SchemaError(f"schema field '{head.strip()}': write NAME [TYPE][: description], TYPE one of {', '.join(CONCISE_TYPES)}")
        name = words[0]
        kind = words[1] if len(words) == 2 else "str"
        if not _FIELD_NAME.fullmatch(name):
            raise SchemaError(f"schema field name '{name}' must be letters, digits, _ and - (starting with a letter or _)")
        if kind not in CONCISE_TYPES:
            raise SchemaError(f"schema field '{name}' has an unknown type '{kind}' (types: {', '.join(CONCISE_TYPES)})")
        if name in properties:
            raise SchemaError(f"schema field '{name}' is given twice")
        prop: dict[str, Any] = {"type": CONCISE_TYPES[kind]}
        if colon and description.strip():
            prop["description"] = description.strip()
        properties[name] = prop
    if not properties:
        raise SchemaError("the schema is empty: give a JSON Schema, a file, or fields such as 'name, age int'")
    return {"type": "object", "properties": properties, "required": list(properties)}


def parse_schema(spec: str, *, base: Path | None = None) -> dict[str, Any]:
    """A JSON Schema from ``--schema``: a file path, inline JSON, or the concise syntax; checked.

    A relative path is looked up in ``base`` (a template's folder) when given, else the current folder.
    """
    text = spec.strip()
    if not text:
        raise SchemaError("the schema is empty: give a JSON Schema, a file, or fields such as 'name, age int'")
    if text.startswith(("{", "[")):
        schema = _json_schema(text, "the inline schema")
    else:
        path = user_path(text)
        if base is not None and not path.is_absolute():
            path = base / path
        if "\n" not in text and "," not in text and path.suffix.lower() == ".json" or path.is_file():
            try:
                content = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                raise SchemaError(f"schema file {path} not found") from None
            except (OSError, UnicodeDecodeError) as exc:
                raise SchemaError(f"cannot read the schema file {path}: {getattr(exc, 'strerror', None) or exc}") from None
            schema = _json_schema(content, str(path))
        else:
            schema = concise_schema(text)
    check_schema(schema)
    return schema


def schema_from_text(text: str, where: str) -> dict[str, Any]:
    """A template's ``schema`` string: inline JSON or the concise syntax (checked when used)."""
    text = text.strip()
    return _json_schema(text, where) if text.startswith("{") else concise_schema(text)


def _json_schema(text: str, where: str) -> dict[str, Any]:
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SchemaError(f"{where} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(schema, dict):
        raise SchemaError(f"{where} must be a JSON object (a JSON Schema), not {type(schema).__name__}")
    return schema


def check_schema(schema: dict[str, Any]) -> None:
    """``SchemaError`` unless ``schema`` is a valid JSON Schema (by its own ``$schema`` draft, else 2020-12)."""
    from jsonschema import exceptions, validators

    cls = validators.validator_for(schema, default=validators.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except exceptions.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        raise SchemaError(f"invalid JSON Schema{f' at {where}' if where else ''}: {_one_line(exc.message)}") from None


def schema_grammar(schema: dict[str, Any]) -> str:
    """GBNF for ``schema`` (llama.cpp's converter), or ``SchemaError`` for what it cannot express."""
    from gptcli.engines.llama import json_schema_to_grammar

    try:
        grammar = json_schema_to_grammar(split_type_lists(schema))
    except (ValueError, AssertionError, KeyError, TypeError, NotImplementedError, RecursionError) as exc:
        # the converter asserts on what it cannot handle (an unresolved $ref, an unknown type)
        why = str(exc).removeprefix("the schema cannot be turned into a grammar: ")
        raise SchemaError(f"llama.cpp's grammar cannot express this schema: {_one_line(why)}") from None
    return grammar.replace(_LOOSE_CHAR, _STRICT_CHAR)


_VALUES = frozenset({"enum", "const", "default", "examples"})  # JSON values, not schemas
_NAMED = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"})  # name -> schema


def split_type_lists(schema: Any) -> Any:
    """``schema`` with every ``"type": [A, B]`` written as ``anyOf`` of one type each, constraints kept.

    llama-cpp-python's converter turns a type list into a union of the bare types and drops the
    rest (``{"type": ["string", "null"], "maxLength": 40}`` became an unbounded string): a small
    model then wrote an order number until the length limit and the reply did not parse. llama.cpp's
    own converter keeps them the same way as here. Only the grammar sees this form; replies are
    validated against the schema as written.
    """
    if isinstance(schema, list):
        return [split_type_lists(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {
        key: value if key in _VALUES
        else {name: split_type_lists(sub) for name, sub in value.items()} if key in _NAMED and isinstance(value, dict)
        else split_type_lists(value)
        for key, value in schema.items()
    }
    types = out.get("type")
    if isinstance(types, list):
        rest = {key: value for key, value in out.items() if key != "type"}
        if len(types) == 1:
            return {**rest, "type": types[0]}
        return {"anyOf": [{**rest, "type": t} for t in types]}
    return out


def load_grammar(path: str) -> str:
    """Raw GBNF from ``--grammar FILE`` (llama.cpp checks it when the reply starts)."""
    try:
        text = user_path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"grammar file {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the grammar file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if not re.search(r"^\s*root\s*::=", text, re.MULTILINE):
        raise SchemaError(f"{path} has no 'root ::= ...' rule: a GBNF grammar starts from its root rule")
    return text


# ---------------------------------------------------------------- checking a reply


def check_reply(text: str, schema: dict[str, Any], usage: Usage | None = None) -> Any:
    """Parse ``text`` as JSON and validate it against ``schema``; ``StructuredReplyError`` says why not."""
    cut = usage is not None and usage.finish_reason == "length"
    try:
        # strict=False: a raw control character inside a string is kept (and escaped on output)
        value = json.loads(text, strict=False)
    except json.JSONDecodeError as exc:
        if cut or (usage is not None and usage.finish_reason in ("interrupted", "loop", "context")):
            n = usage.completion_tokens if usage else 0
            why = {"length": f"reached the length limit ({n} tokens)", "interrupted": "was interrupted",
                   "loop": "was stopped in a loop", "context": "filled the context window"}[usage.finish_reason]  # type: ignore[union-attr]
            hint = ": raise -n/--max-tokens" if cut else ""
            raise StructuredReplyError(f"the reply {why} before its JSON was complete{hint}") from None
        if not text.strip():
            raise StructuredReplyError("the reply is empty, not JSON") from None
        raise StructuredReplyError(f"the reply is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    from jsonschema import validators

    cls = validators.validator_for(schema, default=validators.Draft202012Validator)
    error = next(iter(sorted(cls(schema).iter_errors(value), key=lambda e: list(e.absolute_path))), None)
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path)
        raise StructuredReplyError(f"the reply does not match the schema{f' at {where}' if where else ''}: {_one_line(error.message)}")
    return value


def dump(value: Any, *, pretty: bool) -> str:
    """JSON text for output: indented on a terminal, one line on a pipe (so each value is one line)."""
    if pretty:
        return json.dumps(value, ensure_ascii=False, indent=2)
    return json.dumps(value, ensure_ascii=False)


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
