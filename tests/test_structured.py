"""Structured output on the fake engine and a loopback server: schemas, checked replies, batches, templates."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from gptcli.engines import Chunk, Message, Sampling, Usage
from gptcli.schema import (
    SchemaError,
    StructuredReplyError,
    check_reply,
    concise_schema,
    parse_schema,
    schema_grammar,
    split_type_lists,
)
from gptcli.templates import load_template
from tests.fakes import FakeEngine
from tests.remote_fake_server import FakeOpenAIServer
from tests.test_oneshot import terminal_screen

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


# ---------------------------------------------------------------- reading schemas


def test_concise_syntax_is_llms():
    assert concise_schema("name, age int, bio: a short bio") == {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer"},
            "bio": {"type": "string", "description": "a short bio"},
        },
        "required": ["name", "age", "bio"],
    }


def test_concise_syntax_on_lines_keeps_commas_in_descriptions():
    schema = concise_schema("score float: from 0 to 1, higher is better\nok bool\n")
    assert schema["properties"] == {
        "score": {"type": "number", "description": "from 0 to 1, higher is better"},
        "ok": {"type": "boolean"},
    }


def test_schema_from_file_and_inline(tmp_path: Path):
    path = tmp_path / "person.json"
    path.write_text(json.dumps(PERSON), encoding="utf-8")
    assert parse_schema(str(path)) == PERSON
    assert parse_schema(json.dumps(PERSON)) == PERSON


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("name, age integer", "unknown type 'integer'"),
        ('{"type": "object", "properties": {', "not valid JSON"),
        ('{"type": "strin"}', "invalid JSON Schema"),
        ('["a"]', "must be a JSON object"),
        ("missing.json", "schema file missing.json not found"),
        (" , ", "the schema is empty"),
    ],
)
def test_bad_schemas_say_why(spec: str, message: str):
    with pytest.raises(SchemaError, match=re.escape(message)):
        parse_schema(spec)


def test_a_schema_the_grammar_cannot_express_is_an_error():
    with pytest.raises(SchemaError, match="grammar cannot express"):
        schema_grammar({"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}})


def test_a_type_lists_constraints_reach_the_grammar():
    nullable = {"type": "object", "properties": {"order": {"type": ["string", "null"], "maxLength": 3, "enum": ["a", ["x"]]}}}
    split = split_type_lists(nullable)["properties"]["order"]
    assert split == {"anyOf": [{"maxLength": 3, "enum": ["a", ["x"]], "type": "string"}, {"maxLength": 3, "enum": ["a", ["x"]], "type": "null"}]}
    # the string is bounded (three optional chars after the first quote), not `char*`
    grammar = schema_grammar({"type": "object", "properties": {"order": {"type": ["string", "null"], "maxLength": 3}}})
    assert "char*" not in grammar and "null" in grammar


def test_a_field_named_like_a_keyword_still_has_its_type_list_split():
    schema = {"type": "object", "properties": {"default": {"type": ["string", "null"], "maxLength": 3}}}
    assert split_type_lists(schema)["properties"]["default"] == {"anyOf": [{"maxLength": 3, "type": "string"}, {"maxLength": 3, "type": "null"}]}


def test_the_grammar_keeps_control_characters_out_of_strings():
    grammar = schema_grammar(PERSON)
    assert 'char ::= [^"\\\\\\x7F\\x00-\\x1F]' in grammar
    assert "root ::=" in grammar


# ---------------------------------------------------------------- checking replies


def test_a_valid_reply_is_its_value():
    assert check_reply('{"name": "Ann", "age": 3}', PERSON) == {"name": "Ann", "age": 3}


def test_a_reply_missing_a_field_is_refused():
    with pytest.raises(StructuredReplyError, match="does not match the schema: 'age' is a required property"):
        check_reply('{"name": "Ann"}', PERSON)


def test_a_reply_cut_at_the_length_limit_says_so():
    with pytest.raises(StructuredReplyError, match=r"length limit \(7 tokens\) before its JSON was complete"):
        check_reply('{"name": "An', PERSON, Usage(completion_tokens=7, finish_reason="length"))


# ---------------------------------------------------------------- commands on the fake engine


def test_ask_with_a_schema_prints_one_json_line_on_a_pipe(cli, fake_engine):
    fake_engine.replies = ['{"name": "Ann",  "age": 3}']
    result = cli(["ask", "who?", "--schema", "name, age int"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == '{"name": "Ann", "age": 3}\n'
    sampling = fake_engine.samplings[0]
    assert sampling.json_schema == concise_schema("name, age int")
    assert sampling.grammar and "root ::=" in sampling.grammar  # the local engine gets the grammar


def test_ask_with_a_schema_is_indented_on_a_terminal(cli, fake_engine):
    fake_engine.replies = ['{"name": "Ann", "age": 3}']
    result = cli(["ask", "who?", "--schema", "name, age int"], tty=True)
    assert result.exit_code == 0, result.stderr
    assert terminal_screen(result.stdout) == '{\n  "name": "Ann",\n  "age": 3\n}'


def test_json_events_carry_the_value_parsed(cli, fake_engine):
    fake_engine.replies = ['{"name": "Ann", "age": 3}']
    result = cli(["ask", "who?", "--schema", "name, age int", "--json"])
    assert result.exit_code == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events[-1]["type"] == "done"
    assert events[-1]["data"] == {"name": "Ann", "age": 3}


def test_a_reply_that_does_not_validate_is_one_error_line(cli, fake_engine):
    fake_engine.replies = ['{"name": "Ann", "age": "three"}']
    result = cli(["ask", "who?", "--schema", "name, age int"])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.strip() == "error: the reply does not match the schema at age: 'three' is not of type 'integer'"


def test_a_reply_off_its_schema_is_kept_in_history_marked_interrupted(cli, fake_engine):
    from gptcli.store import ConversationStore

    fake_engine.replies = ['{"name": "Ann", "age": "three"}', '{"name": "Bo"}', '{"name": "Cy", "age": 9}']
    result = cli(["ask", "who?", "--schema", "name, age int"])
    assert result.exit_code == 1 and "does not match the schema" in result.stderr
    chat = cli(["chat", "--commands"], stdin="/schema name, age int\nwho else?\nand now?\n")
    assert chat.exit_code == 0 and chat.stderr.count("does not match the schema") == 1  # the chat goes on
    with ConversationStore.open() as store:
        kept = [
            [(m.content, m.interrupted) for m in store.messages(info.id) if m.role == "assistant"]
            for info in reversed(store.list_sessions(limit=5))
        ]
    assert kept == [
        [('{"name": "Ann", "age": "three"}', True)],
        [('{"name": "Bo"}', True), ('{"name": "Cy", "age": 9}', False)],
    ]


def test_an_invalid_schema_fails_before_the_model_runs(cli, fake_engine):
    result = cli(["ask", "who?", "--schema", '{"type": 5}'])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: invalid JSON Schema") and result.stderr.count("\n") == 1
    assert fake_engine.calls == []


def test_schema_and_grammar_together_is_a_usage_error(cli, fake_engine, tmp_path: Path):
    gbnf = tmp_path / "yes.gbnf"
    gbnf.write_text('root ::= "yes" | "no"\n', encoding="utf-8")
    result = cli(["ask", "ok?", "--schema", "a", "--grammar", str(gbnf)])
    assert result.exit_code == 2
    assert "not both" in result.stderr


def test_grammar_file_reaches_the_engine_and_the_reply_is_text(cli, fake_engine, tmp_path: Path):
    gbnf = tmp_path / "yes.gbnf"
    gbnf.write_text('root ::= "yes" | "no"\n', encoding="utf-8")
    fake_engine.replies = ["yes"]
    result = cli(["ask", "ok?", "--grammar", str(gbnf)])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "yes\n"
    assert fake_engine.samplings[0].grammar == 'root ::= "yes" | "no"\n'
    assert fake_engine.samplings[0].json_schema is None


def test_the_structured_reply_is_stored_in_history(cli, fake_engine):
    from gptcli.store import ConversationStore

    fake_engine.replies = ['{ "name":"Ann", "age":3 }']
    result = cli(["summarize", "--schema", "name, age int"], stdin="Ann is three.\n")
    assert result.exit_code == 0, result.stderr
    with ConversationStore.open() as store:
        session = store.latest_session()
        assert session is not None
        stored = [m.content for m in store.messages(session.id) if m.role == "assistant"]
    assert [json.loads(text) for text in stored] == [{"name": "Ann", "age": 3}]


def write_user_template(home: Path, name: str, text: str) -> None:
    folder = home / "templates"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.toml").write_text(text, encoding="utf-8")


def test_a_template_schema_table_shapes_the_reply(cli, fake_engine, isolated_home: Path):
    write_user_template(
        isolated_home,
        "city",
        'user = "{input}"\n[schema]\ntype = "object"\nrequired = ["city"]\n[schema.properties.city]\ntype = "string"\n',
    )
    fake_engine.replies = ['{"city": "Paris"}']
    result = cli(["ask", "-t", "city", "capital of France?"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"city": "Paris"}
    assert fake_engine.samplings[0].json_schema == {"type": "object", "required": ["city"], "properties": {"city": {"type": "string"}}}


def test_a_template_schema_string_uses_the_concise_syntax(cli, fake_engine, isolated_home: Path):
    write_user_template(isolated_home, "who", 'user = "{input}"\nschema = "name, age int"\n')
    fake_engine.replies = ['{"name": "Ann"}']
    result = cli(["ask", "-t", "who", "Ann"])
    assert result.exit_code == 1  # the reply lacks 'age': the template's schema is enforced
    assert "'age' is a required property" in result.stderr


def test_a_bad_template_schema_names_the_file(cli, fake_engine, isolated_home: Path):
    write_user_template(isolated_home, "bad", 'user = "{input}"\nschema = "age integer"\n')
    result = cli(["ask", "-t", "bad", "x"])
    assert result.exit_code == 1
    assert "bad.toml" in result.stderr and "unknown type 'integer'" in result.stderr


def test_shipped_triage_and_actions_templates_declare_valid_schemas():
    from gptcli.schema import check_schema
    from gptcli.templates import load_template

    for name in ("triage", "actions"):
        template = load_template(name)
        assert template.schema is not None
        check_schema(template.schema)
        assert "root ::=" in schema_grammar(template.schema)
    assert set(load_template("triage").schema["required"]) == {"category", "urgency", "sentiment", "order_number", "summary", "language"}


# ---------------------------------------------------------------- --each-line on an engine that answers per line


@dataclass
class EchoEngine(FakeEngine):
    """Replies with the number found in the last user message; 'cut' lines stop at the length limit."""

    def stream(self, messages: Sequence[Message], sampling: Sampling) -> Iterator[Chunk]:
        self.samplings.append(sampling)
        text = messages[-1]["content"]
        number = int(re.findall(r"\d+", text)[-1])
        time.sleep(0.002 * (number % 5))  # finish out of order
        if "cut" in text:
            return iter([Chunk('{"n": '), Chunk("", Usage(completion_tokens=3, finish_reason="length"))])
        return iter([Chunk(json.dumps({"n": number})), Chunk("", Usage(completion_tokens=5))])


@pytest.fixture
def echo_engine(monkeypatch: pytest.MonkeyPatch) -> EchoEngine:
    engine = EchoEngine()
    monkeypatch.setattr("gptcli.engines.choose.open_engine", lambda settings: engine)
    return engine


def test_each_line_writes_one_value_per_line_in_input_order(cli, echo_engine):
    lines = "\n".join(f"item {i}" for i in range(1, 31)) + "\n"
    result = cli(["ask", "the number", "--schema", "n int", "--each-line", "--parallel", "4"], stdin=lines)
    assert result.exit_code == 0, result.stderr
    assert [json.loads(line) for line in result.stdout.splitlines()] == [{"n": i} for i in range(1, 31)]


def test_each_line_reports_failed_lines_and_writes_only_whole_ones(cli, echo_engine):
    lines = "item 1\nitem 2 cut\n\nitem 4\nitem 5 cut\n"
    result = cli(["ask", "the number", "--schema", "n int", "--each-line"], stdin=lines)
    assert result.exit_code == 1
    assert [json.loads(line) for line in result.stdout.splitlines()] == [{"n": 1}, {"n": 4}]
    errors = result.stderr.strip().splitlines()
    assert errors[0] == "error: line 2: the reply reached the length limit (3 tokens) before its JSON was complete: raise -n/--max-tokens"
    assert errors[1].startswith("error: line 5: the reply reached the length limit")
    assert errors[2] == "error: 2 of 4 lines failed (reported above with their line numbers)"


def test_each_line_shows_a_bar_on_a_terminal_with_failures_above_it(echo_engine):
    from gptcli.cli import run
    from gptcli.render import Env
    from tests.conftest import TextStream

    env = Env(stdin=TextStream("item 1\nitem 2 cut\nitem 3\nitem 4\n"), stdout=TextStream(), stderr=TextStream(tty=True))
    assert run(["ask", "the number", "--schema", "n int", "--each-line", "--parallel", "2"], env=env) == 1
    assert [json.loads(line) for line in env.stdout.getvalue().splitlines()] == [{"n": 1}, {"n": 3}, {"n": 4}]
    screen = terminal_screen(env.stderr.getvalue())
    assert "lines" in screen and "4/4" in env.stderr.getvalue()  # the bar was drawn (then erased)
    assert "error: line 2: the reply reached the length limit" in screen


def test_each_line_json_events_carry_line_numbers_and_errors(cli, echo_engine):
    result = cli(["ask", "n", "--schema", "n int", "--each-line", "--json"], stdin="a 1\nb 2 cut\n")
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(e["type"], e["line"]) for e in events] == [("done", 1), ("error", 2)]
    assert events[0]["data"] == {"n": 1}


def test_json_lines_input_gives_text_and_variables(cli, fake_engine, isolated_home: Path):
    write_user_template(isolated_home, "tagged", 'user = "{tag}: {input}"\n[variables]\ntag = { default = "none" }\n')
    fake_engine.replies = ["ok"]
    records = '{"input": "first", "tag": "A", "id": 7}\n{"text": "second"}\n'
    result = cli(["ask", "-t", "tagged", "--each-line", "--parallel", "1"], stdin=records)
    assert result.exit_code == 0, result.stderr
    assert [call[-1]["content"] for call in fake_engine.calls] == ["A: first", "none: second"]
    assert result.stdout.splitlines() == ['"ok"', '"ok"']  # without a schema each reply is a JSON string


def test_a_bad_json_lines_record_names_its_line(cli, fake_engine):
    result = cli(["ask", "--each-line"], stdin='{"input": "a"}\n{"input": 3}\n')
    assert result.exit_code == 1
    assert result.stderr.strip() == 'error: line 2: a record needs an "input" (or "text") string'
    assert fake_engine.calls == []


# ---------------------------------------------------------------- chat


def test_chat_schema_command_turns_json_replies_on_and_off(cli, fake_engine):
    fake_engine.replies = ['{"name": "Ann", "age": 3}', "free text"]
    result = cli(["chat", "--commands"], stdin="/schema name, age int\nwho?\n/schema off\nhello\n")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == ['{"name": "Ann", "age": 3}', "free text"]
    assert fake_engine.samplings[0].json_schema is not None and fake_engine.samplings[1].json_schema is None


def test_chat_with_a_schema_template_replies_with_its_json(cli, fake_engine):
    triage = load_template("triage").schema
    record = {"category": "shipping", "urgency": "high", "sentiment": "negative", "order_number": "A-1",
              "summary": "Parcel late", "language": "English"}
    fake_engine.replies = [json.dumps(record), "Hello!"]
    # `chat -t triage` shapes replies as `ask -t triage` does; another template without a schema lifts it
    result = cli(["chat", "-t", "triage", "--commands"], stdin="Where is order A-1?\n/template ask\nhi\n")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [json.dumps(record), "Hello!"]
    assert fake_engine.samplings[0].json_schema == triage and fake_engine.samplings[1].json_schema is None


def test_a_users_schema_outlives_a_template_change(cli, fake_engine):
    fake_engine.replies = ['{"n": 1}', '{"n": 2}']
    result = cli(["chat", "--commands"], stdin="/schema n int\none\n/template ask\ntwo\n")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == ['{"n": 1}', '{"n": 2}']
    assert all(s.json_schema is not None for s in fake_engine.samplings)


# ---------------------------------------------------------------- the remote engine


@pytest.fixture
def fake_server():
    server = FakeOpenAIServer().start()
    yield server
    server.stop()


def test_remote_engine_sends_response_format_and_checks_the_reply(cli, fake_server):
    fake_server.reply = '{"name": "Ann", "age": 3}'
    result = cli(["ask", "who?", "--engine", "remote", "--base-url", fake_server.base_url, "--schema", "name, age int"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == '{"name": "Ann", "age": 3}\n'
    body = fake_server.chat_requests()[-1].body
    assert body["response_format"] == {"type": "json_schema", "json_schema": {"name": "reply", "schema": concise_schema("name, age int")}}
    assert "grammar" not in json.dumps(body)


def test_remote_each_line_runs_requests_side_by_side(cli, fake_server):
    fake_server.delay = 0.05
    fake_server.reply_fn = lambda body: json.dumps({"n": int(re.findall(r"\d+", body["messages"][-1]["content"])[-1])})
    lines = "".join(f"x {i}\n" for i in range(8))
    result = cli(["ask", "n", "--engine", "remote", "--base-url", fake_server.base_url, "--schema", "n int", "--each-line"], stdin=lines)
    assert result.exit_code == 0, result.stderr
    assert [json.loads(line)["n"] for line in result.stdout.splitlines()] == list(range(8))
    assert fake_server.max_in_flight > 1
