"""Plain (piped) tables come from Rich: columns line up by terminal cells, trailing spaces dropped."""

from rich.cells import cell_len

from gptcli.render import plain_columns


def test_columns_line_up_by_cells_even_with_wide_characters():
    lines = plain_columns([["NAME", "DESCRIPTION"], ["翻訳", "日本語へ"], ["summarize", "a summary"]])
    starts = [cell_len(line[: line.index(word)]) for line, word in zip(lines, ["DESCRIPTION", "日本語へ", "a summary"])]
    assert starts == [len("summarize") + 2] * 3
    assert all(line == line.rstrip() for line in lines)


def test_an_empty_last_cell_leaves_no_trailing_spaces():
    assert plain_columns([["a", "bb", ""], ["ccc", "d", "e"]]) == ["a    bb", "ccc  d   e"]
