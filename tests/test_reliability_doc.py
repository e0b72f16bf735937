"""docs/RELIABILITY.md stays true: every test it names exists, and every section has rows."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "RELIABILITY.md"


def named_tests() -> list[tuple[str, str]]:
    return re.findall(r"`(tests/test_\w+\.py)::(test_\w+)`", DOC.read_text(encoding="utf-8"))


def defined_tests(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}


def test_every_test_the_table_names_exists():
    named = named_tests()
    assert len(named) > 60
    missing = [f"{file}::{name}" for file, name in named if name not in defined_tests(ROOT / file)]
    assert not missing, f"docs/RELIABILITY.md names tests that do not exist: {missing}"


def test_every_row_names_a_test():
    rows = [line for line in DOC.read_text(encoding="utf-8").splitlines() if line.startswith("| ") and "---" not in line]
    rows = [row for row in rows if not row.startswith(("| case ", "| case |"))]
    assert len(rows) > 40
    assert all("tests/test_" in row for row in rows), [row for row in rows if "tests/test_" not in row]
