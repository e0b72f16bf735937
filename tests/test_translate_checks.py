"""gptcli translate's reply checks: crafted replies through a scripted engine, each check's verdict,
what the document gets (never a broken one), the summary, --strict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gptcli.translate.checks import Checker, added_structure, language_ok, length_ok, numbers_kept
from tests.test_translate import ScriptedTranslator, user_text

FRENCH = {
    "Install the package and run the command below to check that it works.":
        "Installez le paquet et lancez la commande ci-dessous pour vérifier qu'il fonctionne.",
    "The server keeps the last 250 messages of every conversation for 30 days.":
        "Le serveur garde les 250 derniers messages de chaque conversation pendant 30 jours.",
    "Read the guide before you change the settings of your account.":
        "Lisez le guide avant de modifier les paramètres de votre compte.",
    "Daily use": "Utilisation quotidienne",
}
DOC = (
    "## 1.2 Daily use\n\n"
    "Install the package and run the command below to check that it works.\n\n"
    "The server keeps the last 250 messages of every conversation for 30 days.\n\n"
    "Read the guide before you change the settings of your account.\n"
)


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> ScriptedTranslator:
    """A scripted engine that translates each paragraph of DOC into French, sent alone (one per chunk)."""
    scripted = ScriptedTranslator(transform=lambda text: FRENCH.get(text, text))
    monkeypatch.setattr("gptcli.engines.choose.open_engine", lambda settings: scripted)
    return scripted


@pytest.fixture
def doc(tmp_path: Path) -> Path:
    path = tmp_path / "guide.md"
    path.write_text(DOC, encoding="utf-8")
    return path


def run_json(cli, doc: Path, *more: str) -> tuple[dict, object]:
    result = cli(["translate", str(doc), "--to", "fr", "--json", "--chunk-tokens", "16", *more])
    return json.loads(result.stdout.splitlines()[-1]), result


def spoil(engine: ScriptedTranslator, source: str, reply: str, times: int = 2) -> None:
    """Make the engine answer ``reply`` to ``source`` the first ``times`` times it is asked."""
    good = engine.transform
    asked = {"n": 0}

    def transform(text: str) -> str:
        if text == source and asked["n"] < times:
            asked["n"] += 1
            return reply
        return good(text)

    engine.transform = transform


PARAGRAPH = "The server keeps the last 250 messages of every conversation for 30 days."
TRANSLATED = FRENCH[PARAGRAPH]


def test_good_replies_are_all_trusted(cli, engine, doc):
    done, result = run_json(cli, doc)
    assert result.exit_code == 0, result.stderr
    assert done["text"] == "## 1.2 Utilisation quotidienne\n\n" + "\n\n".join(FRENCH[p.strip()] for p in DOC.split("\n\n")[1:]) + "\n"
    assert done["pieces"] == 4 and done["trusted"] == 1.0 and done["kept_source"] == 0 and done["retried"] == 0
    assert done["checks"] == {"language": 4, "length": 4, "structure": 4, "numbers": 4, "spans": 4}
    assert "not translations" not in result.stderr


@pytest.mark.parametrize(
    ("reply", "check"),
    [
        ("The server keeps the last 250 messages of every conversation for 30 days, you know.", "language"),
        ("To translate into French, you need to keep 250 messages and 30 days in mind first.", "language"),
        ("Le serveur.", "length"),
        ("```python\nLe serveur garde les 250 derniers messages de chaque conversation pendant 30 jours.", "structure"),
        ("Le serveur garde les 250 derniers messages (voir https://invented.example.com) pendant 30 jours.", "structure"),
        ("Le serveur garde les 25 derniers messages de chaque conversation pendant 30 jours.", "numbers"),
        ("Le serveur garde les derniers messages de chaque conversation pendant trente jours.", "numbers"),
    ],
)
def test_a_reply_that_fails_a_check_is_sent_again_and_the_second_reply_is_kept_when_good(cli, engine, doc, reply, check):
    spoil(engine, PARAGRAPH, reply, times=1)
    done, result = run_json(cli, doc)
    assert result.exit_code == 0, result.stderr
    assert TRANSLATED in done["text"] and reply not in done["text"]
    assert (done["retried"], done["kept_source"], done["trusted"]) == (1, 0, 1.0)
    assert sum(user_text(call) == PARAGRAPH for call in engine.calls) == 2
    retry = [s for call, s in zip(engine.calls, engine.samplings) if user_text(call) == PARAGRAPH][1]
    assert retry.temperature >= 0.5  # a greedy retry would only write the same reply again


@pytest.mark.parametrize(
    ("reply", "check"),
    [
        (PARAGRAPH, "language"),
        ("```python", "structure"),
        # a marker the source line lacks is taken off a bare piece's reply ("20 Le serveur..."); a one-line piece keeps one line
        ("## 20 Le serveur garde les 250 derniers messages de chaque conversation pendant 30 jours.", "numbers"),
        ("- Le serveur garde les 250 derniers messages\n- de chaque conversation pendant 30 jours.", "numbers"),
        ("| Le serveur | garde les 250 derniers messages de chaque conversation pendant 30 jours |", "structure"),
        ("Le serveur garde les 250 derniers messages de chaque conversation pendant 3 jours.", "numbers"),
    ],
)
def test_a_piece_that_fails_twice_keeps_its_source_and_is_counted(cli, engine, doc, reply, check):
    spoil(engine, PARAGRAPH, reply)
    done, result = run_json(cli, doc)
    assert result.exit_code == 0, result.stderr
    assert PARAGRAPH + "\n" in done["text"]  # the source, in its place
    assert done["text"].count("```") == 0 and "## 20" not in done["text"] and "\n- " not in done["text"]
    assert (done["retried"], done["kept_source"], done["pieces"]) == (1, 1, 4)
    assert done["checks"][check] == 3 and done["trusted"] == 0.75
    chunk = next(json.loads(line) for line in result.stdout.splitlines() if PARAGRAPH in line and '"chunk"' in line)
    assert len(chunk["failed"]) == 1 and check in chunk["failed"][0]


def test_the_warning_names_the_failed_checks_and_a_better_model_when_most_pieces_are_no_translation(cli, engine, doc, tmp_path):
    engine.transform = lambda text: text  # the source given back: English left as it was
    out = tmp_path / "guide.fr.md"
    result = cli(["translate", str(doc), "--to", "fr", "-o", str(out), "--chunk-tokens", "16"])
    assert result.exit_code == 0, result.stderr
    assert out.read_text() == DOC  # nothing lost, nothing broken: the source kept
    lines = result.stderr.splitlines()
    assert any(line.endswith("; 25% of 4 pieces trusted") for line in lines)  # "Daily use" is too short to judge
    assert "warning: 3 of 4 pieces were kept in the source language: their replies failed the checks twice (language 3)" in lines
    assert any(line.startswith("75% of the pieces of") and "the model is too small for this job; try `gptcli models pull qwen2.5-1.5b` (1.1 GB, multilingual)" in line for line in lines)


def test_strict_exits_1_below_the_threshold_and_0_above(cli, engine, doc, tmp_path):
    good = cli(["translate", str(doc), "--to", "fr", "--strict", "--chunk-tokens", "16"])
    assert good.exit_code == 0, good.stderr
    engine.transform = lambda text: text
    out = tmp_path / "guide.fr.md"
    bad = cli(["translate", str(doc), "--to", "fr", "--strict", "--no-resume", "-o", str(out), "--chunk-tokens", "16"])
    assert bad.exit_code == 1
    assert bad.stderr.splitlines()[-1] == f"error: {doc}: under 80% of the pieces passed the checks (--strict); the output was written"
    assert out.read_text() == DOC


def test_a_heading_number_is_never_sent_so_never_changed(cli, engine, doc):
    spoil(engine, "Daily use", "20 Utilisation", times=5)
    done, _ = run_json(cli, doc)
    assert done["text"].startswith("## 1.2 20 Utilisation\n") or done["text"].startswith("## 1.2 Daily use\n")
    assert all("1.2" not in user_text(call) for call in engine.calls)


def test_verdicts_are_kept_in_the_cache_so_a_resumed_run_reports_the_same(cli, engine, doc):
    spoil(engine, PARAGRAPH, PARAGRAPH)
    first, _ = run_json(cli, doc)
    calls = len(engine.calls)
    again, _ = run_json(cli, doc)
    assert len(engine.calls) == calls and again["cached"] == again["chunks"]
    for key in ("pieces", "checks", "trusted", "kept_source", "text"):
        assert again[key] == first[key]


# ---------------------------------------------------------------- the checks themselves


def test_language_check_judges_source_against_target_and_lets_short_replies_pass():
    en, fr = "Install the package and run the command below.", "Installez le paquet et lancez la commande ci-dessous."
    assert language_ok(en, fr, "fr", "en")
    assert not language_ok(en, en, "fr", "en")  # given back as it was
    assert not language_ok(en, "Install the package, then run the command written below it.", "fr", "en")
    assert language_ok("Options", "Options", "fr", "en")  # too short to tell
    assert language_ok(en, "安装软件包并运行下面的命令来检查它是否有效。", "zh", "en")
    assert not language_ok(en, "To translate into Chinese, you need to use a dictionary.", "zh", "en")
    assert language_ok(en, en, "en", "en")  # into its own language: nothing to judge


def test_checker_learns_the_document_language_and_knows_regional_codes():
    checker = Checker("zh-CN")
    checker.learn_source(DOC)
    assert (checker.target, checker.source_lang) == ("zh", "en")
    assert checker.failed(PARAGRAPH, PARAGRAPH) == ("language",)


def test_length_structure_and_number_checks():
    assert length_ok(PARAGRAPH, TRANSLATED) and not length_ok(PARAGRAPH, "Le serveur.") and not length_ok("Hi", "")
    assert length_ok(PARAGRAPH, "服务器将每个对话的最后250条消息保留30天。")  # a CJK character holds more
    assert added_structure("See `x`.", "Voir ```x```.") == ["fence"]
    assert added_structure("Line one", "Ligne un\n# Titre") == ["heading"]
    assert added_structure("Line one\nand two", "Ligne un\n- et deux") == ["list item"]
    assert added_structure("A | B", "A | B\n| C | D |") == ["table row"]
    assert added_structure("See https://a.example/x.", "Voir https://a.example/x.") == []
    assert added_structure("See the docs.", "Voir [2](https://b.example).") == ["URL"]
    assert numbers_kept("Costs 1,000.50 for 3 users", "Coûte 1 000,50 pour 3 utilisateurs")
    assert not numbers_kept("Section 1.2 has 3 parts", "La section 20 a 3 parties")


# ---------------------------------------------------------------- what retries cost

TOPICS = ("backups", "passwords", "invoices", "printers", "updates", "accounts", "licences", "reports", "folders", "servers")
MANY = "\n\n".join(f"Read the guide about {topic} before you change any setting." for topic in TOPICS) + "\n"


def test_a_failed_piece_is_sent_again_right_after_its_first_reply(cli, engine, tmp_path):
    """Sent at once, a retry's prompt is the one the engine's KV cache holds (only its last token is read again)."""
    spoil(engine, PARAGRAPH, "Le serveur.", times=1)
    pieces = engine.transform
    engine.transform = lambda text: "```" if "\n\n" in text else pieces(text)  # the whole chunk comes back broken
    result = cli(["translate", str(write(tmp_path, DOC)), "--to", "fr", "--json"])
    assert result.exit_code == 0, result.stderr
    done = json.loads(result.stdout.splitlines()[-1])
    texts = [user_text(call) for call in engine.calls]
    assert PARAGRAPH in texts[0] and "Daily use" in texts[0]  # one chunk, sent whole, then piece by piece
    first = texts.index(PARAGRAPH)
    assert texts[first + 1] == PARAGRAPH and len(texts) == 6  # no other piece in between
    assert done["retried"] == 1 and done["trusted"] == 1.0 and done["fell_back"] == 1


def test_every_failed_piece_is_sent_once_more_then_kept_as_the_source(cli, engine, tmp_path):
    engine.transform = lambda text: text  # every reply is the source: no retry can pass
    done, result = run_json(cli, write(tmp_path, MANY))
    assert result.exit_code == 0, result.stderr
    assert (done["pieces"], done["retried"], done["kept_source"]) == (10, 10, 10)
    assert len(engine.calls) == 20  # each piece twice, never a third time
    assert done["text"] == MANY  # kept as the source
    shown = cli(["translate", str(tmp_path / "doc.md"), "--to", "fr", "-o", str(tmp_path / "doc.fr.md"), "--chunk-tokens", "16", "--no-resume"])
    assert "warning: 10 of 10 pieces were kept in the source language: their replies failed the checks twice (language 10)" in shown.stderr.splitlines()


def test_retries_go_on_in_a_document_where_they_pass(cli, engine, tmp_path):
    asked: set[str] = set()

    def first_reply_untranslated(text: str) -> str:  # each piece's first reply fails, its retry passes
        if text in asked:
            return "Lisez le guide avant de modifier le moindre réglage, je vous prie."
        asked.add(text)
        return text

    engine.transform = first_reply_untranslated
    done, result = run_json(cli, write(tmp_path, MANY))
    assert result.exit_code == 0, result.stderr
    assert (done["retried"], done["kept_source"], done["trusted"]) == (10, 0, 1.0)
    assert len(engine.calls) == 20


def write(folder: Path, text: str) -> Path:
    path = folder / "doc.md"
    path.write_text(text, encoding="utf-8")
    return path
