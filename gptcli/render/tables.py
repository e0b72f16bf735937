"""Tables: a Rich table on a terminal, left-aligned columns on a pipe."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from rich.console import Console

from gptcli.render.env import Env
from gptcli.render.writers import write_text


def plain_columns(rows: Sequence[Sequence[str]], *, gap: int = 2) -> list[str]:
    """``rows`` as lines of left-aligned columns ``gap`` spaces apart, for a pipe: a Rich table, no styles.

    Widths are terminal cells (a CJK title takes two per character); trailing spaces are dropped.
    """
    import io

    from rich.table import Table
    from rich.text import Text

    if not rows:
        return []
    table = Table(box=None, show_header=False, pad_edge=False, padding=(0, gap, 0, 0), collapse_padding=False)
    for _ in rows[0]:
        table.add_column(no_wrap=True, overflow="ignore")
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    buffer = io.StringIO()
    Console(file=buffer, width=1_000_000, color_system=None, force_terminal=False, legacy_windows=False).print(table)
    return [line.rstrip() for line in buffer.getvalue().splitlines()]


@dataclass(frozen=True)
class Column:
    """A column of a table written by ``write_table``: its heading and how its cells sit."""

    heading: str
    wrap: bool = True  # on a terminal, a cell too wide folds onto more lines; False: one line, cut with "…"


def write_table(
    env: Env,
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    *,
    bold: Collection[int] = (),
    headings_on_pipe: bool = True,
    above: str | None = None,
) -> None:
    """A table on stdout: on a terminal a Rich table with bold headings, the rows whose index is in
    ``bold`` in bold; on a pipe the same cells in plain columns (``plain_columns``), the headings
    left out unless ``headings_on_pipe``. ``above`` is a line before the table (dim on a terminal).

    Cells are text as it is: a title such as ``[red]`` is never read as Rich markup.
    """
    if env.styled_output():
        from rich.table import Table
        from rich.text import Text

        console = env.console()
        if above is not None:
            console.print(above, style="dim", markup=False, highlight=False, soft_wrap=True)
        table = Table(box=None, pad_edge=False, header_style="bold")
        for column in columns:
            table.add_column(column.heading, no_wrap=not column.wrap, overflow="fold" if column.wrap else "ellipsis")
        for index, row in enumerate(rows):
            table.add_row(*(Text(cell) for cell in row), style="bold" if index in bold else None)
        console.print(table)
        return
    lines = [] if above is None else [above]
    headings = [[column.heading for column in columns]] if headings_on_pipe else []
    lines += plain_columns([*headings, *rows])
    write_text(env, "".join(line + "\n" for line in lines))


def write_columns(env: Env, rows: Sequence[Sequence[str]]) -> None:
    """``rows`` in left-aligned columns on stdout (``plain_columns``), whatever stdout is."""
    write_text(env, "".join(line + "\n" for line in plain_columns(rows)))
