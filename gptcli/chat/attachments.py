"""Files attached to a chat message (``/file PATH`` or ``@PATH``): read, checked, fenced into the message."""

from __future__ import annotations

import re
from collections.abc import Sequence

from gptcli.errors import UsageError
from gptcli.textio import user_path

ATTACHMENT = re.compile(r"(?:(?<=\s)|^)@(\S+)")
MAX_ATTACHMENT = 1_000_000  # bytes: a larger file would not fit any context window


def read_attachment(spec: str) -> tuple[str, str]:
    """The (shown path, text) of a file to attach; ``UsageError`` when it is missing or not text."""
    path = user_path(spec)
    if not path.is_file():
        raise UsageError(f"no such file: {spec}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {spec}: {exc.strerror or exc}") from None
    if len(data) > MAX_ATTACHMENT:
        raise UsageError(f"{spec} is {len(data) // 1024} KB: too large to attach (at most {MAX_ATTACHMENT // 1024} KB)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{spec} is not a text file (UTF-8)") from None
    if "\x00" in text:
        raise UsageError(f"{spec} is not a text file")
    return spec, text


def with_attachments(message: str, files: Sequence[tuple[str, str]]) -> str:
    """The message followed by each file's text in a fence longer than any backtick run inside it."""
    parts = [message]
    for name, text in files:
        longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
        fence = "`" * max(3, longest + 1)
        parts.append(f"{name}:\n{fence}\n{text.rstrip()}\n{fence}")
    return "\n\n".join(parts)
