"""Reassembly: chunk translations, finished in any order, written back into the document in order."""

from __future__ import annotations

from collections.abc import Sequence

from gptcli.translate.document import Unit
from gptcli.translate.planning import DocChunk, Plan


class Assembler:
    """Receives chunk translations in any order and releases the document's text in order."""

    def __init__(self, plan: Plan, spaceless_target: bool = False) -> None:
        self.blocks = plan.blocks
        self.next_block = 0
        self.spaceless = spaceless_target
        self.needed: dict[int, list[list[int]]] = {}  # unit index -> pieces per part
        for chunk in plan.chunks:
            for atom in chunk.atoms:
                parts = self.needed.setdefault(atom.block, [])
                while len(parts) <= atom.part:
                    parts.append([])
                parts[atom.part] = [0] * atom.pieces
        self.done: dict[int, dict[tuple[int, int], tuple[str, str]]] = {}

    def add(self, chunk: DocChunk, translations: Sequence[str]) -> None:
        for atom, text in zip(chunk.atoms, translations):
            self.done.setdefault(atom.block, {})[(atom.part, atom.piece)] = (text, atom.sep)

    def _ready(self, index: int) -> bool:
        have = self.done.get(index, {})
        return all((p, k) in have for p, pieces in enumerate(self.needed.get(index, [])) for k in range(len(pieces)))

    def drain(self) -> str:
        """The text of every block that can be written now, in document order."""
        out: list[str] = []
        while self.next_block < len(self.blocks):
            block = self.blocks[self.next_block]
            if isinstance(block, Unit):
                if not self.needed.get(self.next_block):
                    out.append(block.text)  # nothing to translate in it
                elif not self._ready(self.next_block):
                    break
                else:
                    have = self.done.pop(self.next_block)
                    parts = []
                    for p, pieces in enumerate(self.needed.pop(self.next_block)):
                        text = ""
                        for k in range(len(pieces)):
                            piece, sep = have[(p, k)]
                            if k < len(pieces) - 1 and self.spaceless and sep.strip(" ") == "":
                                sep = ""
                            text += piece + (sep if k < len(pieces) - 1 else "")
                        parts.append(text)
                    out.append(block.rebuild(parts))
            else:
                out.append(block.text)
            self.next_block += 1
        return "".join(out)
