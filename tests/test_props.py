"""Property tests: whatever text, bytes or values come in, nothing but gptcli's own errors escapes.

Bounded example counts keep the file to a few seconds. The document splitter's round trip is in
tests/test_translate_props.py and the slash-command parser's plain-text property in
tests/test_repl.py; these add hostile inputs and the pieces those files do not reach.
"""

from __future__ import annotations

import io
import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gptcli.config import KEYS, Settings, load_settings, read_config_file
from gptcli.errors import ConfigError, GptcliError, InputError, ModelError, TemplateError, UsageError
from gptcli.ggufinfo import read_gguf
from gptcli.models import embedded_model_path
from gptcli.chat.commands import ALIASES, COMMANDS, parse_command
from gptcli.templates import parse_template, parse_vars, placeholders, render_text
from gptcli.textio import decode_text
from gptcli.translate import parse_document, plan_document, split_long_text

ANY_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=200)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def temp_file(data: bytes, suffix: str = "") -> Path:
    folder = Path(tempfile.mkdtemp(prefix="gptcli-props-"))
    path = folder / f"input{suffix}"
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------- templates

NAME = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
TEMPLATE_TEXT = st.lists(
    st.one_of(ANY_TEXT, NAME.map(lambda n: "{" + n + "}"), st.sampled_from(["{", "}", "{{", "}}", "{0}", "{!r}", "{a.b}", "{%", "{{x}}"])),
    max_size=8,
).map("".join)


@FAST
@given(TEMPLATE_TEXT, st.dictionaries(NAME, ANY_TEXT, max_size=4))
def test_rendering_any_template_text_raises_only_template_errors(text: str, values: dict[str, str]) -> None:
    try:
        out = render_text(text, values)
    except TemplateError:
        assert placeholders(text) - set(values)  # only a variable it was not given
        return
    for name in placeholders(text):
        assert values[name] in out  # inserted verbatim, never re-scanned


@FAST
@given(ANY_TEXT)
def test_a_value_is_never_a_format_string(value: str) -> None:
    template = parse_template("t", 'system = "Tone: {tone}."\nuser = "{input}"\n[variables]\ntone = "plain"\n', source="test")
    messages = template.render(value, {"tone": value})
    assert messages[0]["content"] == f"Tone: {value}."
    assert messages[-1]["content"] == value.strip() or messages[-1]["content"] == value


TOML_LINES = st.lists(
    st.one_of(
        ANY_TEXT,
        st.tuples(st.sampled_from(["system", "user", "description", "temperature", "max_tokens", "input", "nonsense"]),
                  st.one_of(ANY_TEXT.map(repr), st.integers().map(str), st.floats(allow_nan=True).map(str), st.just("[1, 2]"),
                            st.just("{a = 1}"), st.just("true"))).map(lambda kv: f"{kv[0]} = {kv[1]}"),
        st.sampled_from(["[variables]", "[[examples]]", "[variables.tone]", "tone = 'x'", "user = '''\n{input}\n'''"]),
    ),
    max_size=8,
).map("\n".join)


@FAST
@given(TOML_LINES)
def test_parsing_any_template_file_raises_only_template_errors(text: str) -> None:
    try:
        template = parse_template("fuzz", text, source="user")
    except TemplateError:
        return
    try:
        template.render("input {0} {__class__}", {})
    except TemplateError:
        pass


@FAST
@given(st.lists(ANY_TEXT, max_size=5))
def test_parsing_any_var_options_raises_only_template_errors(pairs: list[str]) -> None:
    try:
        values = parse_vars(pairs)
    except TemplateError:
        assert any("=" not in p or not p.partition("=")[0].strip() for p in pairs)
        return
    assert all(isinstance(v, str) for v in values.values())


# ---------------------------------------------------------------- the config loader

KEY_NAMES = st.one_of(st.sampled_from(sorted(KEYS)), NAME, st.just("engines"))
TOML_VALUES = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda f: {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(str(f), repr(f))),
    st.booleans().map(lambda b: str(b).lower()),
    ANY_TEXT.map(lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'),
    st.sampled_from(["[]", "[1, 'a']", "{}", "{ base_url = 'x' }", "1979-05-27", "'all'"]),
)


@FAST
@given(st.lists(st.tuples(KEY_NAMES, TOML_VALUES), max_size=6))
def test_any_config_values_give_settings_or_one_config_error(pairs: list[tuple[str, str]]) -> None:
    text = "\n".join(f"{k} = {v}" for k, v in dict(pairs).items())
    path = temp_file(text.encode(), ".toml")
    try:
        settings_ = load_settings(path, environ={})
    except ConfigError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
        return
    for name, key in KEYS.items():  # what was accepted passes the key's own check
        if settings_.sources[name] == "file":
            assert key.check(settings_.values[name]) == settings_.values[name] or name == "gpu_layers"


@FAST
@given(st.binary(max_size=300) | ANY_TEXT.map(str.encode))
def test_any_config_file_bytes_give_settings_or_one_config_error(data: bytes) -> None:
    path = temp_file(data, ".toml")
    try:
        read_config_file(path)
    except ConfigError as exc:
        assert str(path) in str(exc)


@FAST
@given(st.dictionaries(st.sampled_from(sorted(KEYS)), ANY_TEXT.filter(lambda s: "\x00" not in s), max_size=4))
def test_any_environment_values_give_settings_or_one_config_error(values: dict[str, str]) -> None:
    environ = {f"GPTCLI_{k.upper()}": v for k, v in values.items()}
    try:
        load_settings(Path(tempfile.gettempdir()) / "gptcli-props-none.toml", environ=environ)
    except ConfigError as exc:
        assert "GPTCLI_" in str(exc)


@FAST
@given(st.dictionaries(st.sampled_from(["temperature", "top_p", "top_k", "min_p", "repeat_penalty", "max_tokens", "seed", "ctx"]),
                       st.one_of(st.integers(min_value=-(2**40), max_value=2**40), st.floats(allow_nan=True)), max_size=4))
def test_any_flag_values_give_settings_or_one_config_error(flags: dict[str, object]) -> None:
    base = Settings(values={n: k.default for n, k in KEYS.items()}, sources={n: "default" for n in KEYS})
    try:
        result = base.with_flags(**flags)
    except UsageError as exc:
        assert str(exc).startswith("--")
        return
    for name, value in flags.items():
        assert result.values[name] == value  # NaN never gets in: NaN != NaN would fail here


# ---------------------------------------------------------------- the slash-command parser

COMMAND_WORDS = st.sampled_from(sorted(set(COMMANDS) | set(ALIASES) | {"sett", "modle", "x", "?"}))


@settings(max_examples=300, deadline=None)
@given(COMMAND_WORDS, st.sampled_from(["", " ", "=", "\t", "\n"]), ANY_TEXT)
def test_any_slash_command_line_raises_only_gptcli_errors(word: str, separator: str, rest: str) -> None:
    try:
        command = parse_command(f"/{word}{separator}{rest}")
    except GptcliError:
        return
    assert command is None or command.name in COMMANDS


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["temperature", "top_p", "top_k", "min_p", "repeat_penalty", "max_tokens", "seed", "overflow", "temp", "nope"]),
       st.one_of(ANY_TEXT, st.sampled_from(["nan", "inf", "-inf", "1e999", "-0", "0x10", "1_000", "9" * 400, "random"])))
def test_any_set_value_raises_only_gptcli_errors(key: str, value: str) -> None:
    try:
        command = parse_command(f"/set {key} {value}")
    except GptcliError:
        return
    assert command is not None and command.key is not None
    if isinstance(command.value, float):
        assert command.value == command.value and abs(command.value) != float("inf")  # finite, not NaN


@pytest.fixture(scope="module")
def chat_session():
    from gptcli.config import load_settings as load
    from gptcli.render import Env
    from gptcli.repl import ChatSession
    from tests.fakes import FakeEngine

    class Quiet(io.StringIO):
        def isatty(self) -> bool:
            return False

    import gptcli.engines.choose as choose

    original = choose.open_engine
    choose.open_engine = lambda settings: FakeEngine()
    try:
        env = Env(stdin=Quiet(), stdout=Quiet(), stderr=Quiet())
        yield ChatSession(load(Path(tempfile.gettempdir()) / "gptcli-props-none.toml", environ={}), env, store=None, saving=False, interactive=False)
    finally:
        choose.open_engine = original


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(ANY_TEXT, st.tuples(COMMAND_WORDS, ANY_TEXT).map(lambda p: f"/{p[0]} {p[1]}")))
def test_the_chat_survives_any_line(chat_session, line: str) -> None:
    """Whatever is typed, the chat goes on (or leaves on /exit): no exception reaches the prompt."""
    if parse_safe_exit(line) or line.lstrip().startswith(("/export", "/model", "/load")):
        return  # these act on files and models; their errors are covered in tests/test_repl.py
    assert chat_session.handle(line) in (True, False)


def parse_safe_exit(line: str) -> bool:
    try:
        command = parse_command(line)
    except GptcliError:
        return False
    return command is not None and command.name == "exit"


# ---------------------------------------------------------------- the document splitter (hostile text)

HOSTILE = st.text(alphabet=st.sampled_from(list("ab .!?,;\n\r\t|#>-*`~[]()<>\\\u00a0\u3002\u200b\x00\x0b\x0c\u2028")), max_size=300)


def count(text: str) -> int:
    return len(text.split()) + text.count("\n")


@FAST
@given(HOSTILE, st.integers(1, 64), st.booleans())
def test_splitting_any_text_raises_only_gptcli_errors_and_loses_nothing(text: str, budget: int, markdown: bool) -> None:
    assert "".join(b.text for b in parse_document(text, markdown)) == text
    try:
        plan = plan_document(text, count, budget, markdown=markdown)
    except GptcliError:
        assert budget < 8  # only a budget below the smallest chunk is refused
        return
    assert all(c.source_tokens <= budget or len(c.atoms) == 1 for c in plan.chunks)


@FAST
@given(HOSTILE, st.integers(1, 40))
def test_cutting_a_long_text_joins_back_exactly(text: str, limit: int) -> None:
    pieces = split_long_text(text, limit, count)
    assert "".join(piece + ws for piece, ws in pieces) == text


# ---------------------------------------------------------------- bytes from outside: GGUF headers and text files

REAL_HEADER = embedded_model_path().open("rb").read(4096)


@FAST
@given(st.one_of(
    st.binary(max_size=512),
    st.binary(max_size=256).map(lambda b: b"GGUF" + struct.pack("<I", 3) + b),
    st.tuples(st.integers(0, len(REAL_HEADER) - 1), st.binary(min_size=1, max_size=8)).map(
        lambda t: REAL_HEADER[: t[0]] + t[1] + REAL_HEADER[t[0] + len(t[1]) :]),  # a real header with bytes overwritten
    st.integers(0, len(REAL_HEADER)).map(lambda n: REAL_HEADER[:n]),  # a real header cut short
))
def test_any_model_file_bytes_give_a_header_or_one_model_error(data: bytes) -> None:
    path = temp_file(data, ".gguf")
    try:
        read_gguf(path)
    except ModelError as exc:
        assert "\n" not in str(exc)


@FAST
@given(st.binary(max_size=400))
def test_any_input_bytes_decode_or_give_one_input_error(data: bytes) -> None:
    try:
        text = decode_text(data, "input.txt")
    except InputError as exc:
        assert str(exc).startswith("input.txt ") and "\n" not in str(exc)
        return
    assert isinstance(text, str)


@FAST
@given(ANY_TEXT)
def test_valid_utf8_always_reads_back_exactly(text: str) -> None:
    if "\x00" in text:
        return  # NUL bytes mean binary, by design
    assert decode_text(text.encode("utf-8"), "input.txt") == text.removeprefix("\ufeff")


# ---------------------------------------------------------------- history search with any words


@pytest.fixture(scope="module")
def searchable_store(tmp_path_factory: pytest.TempPathFactory):
    from gptcli.store import ConversationStore

    store = ConversationStore.open(tmp_path_factory.mktemp("search") / "history.db")
    info = store.create_session(model="m", title="t")
    store.add_turn(info.id, 'how do I quote "things" in SQL? NEAR AND OR NOT * ^ 数据', "use ''doubled'' quotes")
    yield store
    store.close()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(ANY_TEXT, st.lists(st.sampled_from(['"', "*", "AND", "OR", "NOT", "NEAR(", ")", "^", ":", "-", "数据", "quote"]), max_size=6).map(" ".join)))
def test_searching_history_for_any_words_never_breaks(searchable_store, query: str) -> None:
    hits = searchable_store.search(query)
    assert isinstance(hits, list)
