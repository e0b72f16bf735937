"""Reading user text safely (encodings, binary files, stdin) and writing files atomically."""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import IO

from gptcli.errors import InputError

BOMS = (
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)


# a Markdown code fence's opening line: at most three spaces, then three or more ` or ~ (CommonMark)
_FENCE = re.compile(r"[ \t]{0,3}(`{3,}|~{3,})")


def fence_mark(line: str) -> str | None:
    """The fence's marker (```, ~~~~, ...) when ``line`` opens a Markdown code fence, else None."""
    match = _FENCE.match(line)
    return match.group(1) if match else None


def closes_fence(line: str, mark: str) -> bool:
    """Whether ``line`` closes the fence ``mark`` opened: the same character, at least as many, nothing else.

    The one fence rule the translator's document model and the knowledge base's splitter share: a
    four-backtick fence around a three-backtick example stays open until its own closing line.
    """
    closing = line.strip()
    return closing.startswith(mark) and set(closing) == {mark[0]}


# C0 controls but tab and newline, DEL, and the C1 controls (U+009B is a one-character CSI)
_TERMINAL_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    if code < 0x20:
        return chr(0x2400 + code)  # Unicode's control pictures: ESC shows as ␛, BEL as ␇
    return "\u2421" if code == 0x7F else f"<{code:02X}>"


def sanitize_terminal(text: str) -> str:
    """Text from a model or a server made safe for a terminal: escape sequences shown, not executed.

    ``\x1b[2J`` (clear the screen) prints as ``␛[2J``, an OSC title change as ``␛]0;...␇``; a
    CRLF becomes a newline; tabs and newlines are kept. Used on a terminal only (``--raw`` turns
    it off); a pipe or a file gets the text as it came.
    """
    return _TERMINAL_CONTROL.sub(_visible, text.replace("\r\n", "\n"))


ENCODING_OPTION_ADVICE = "pass --encoding (for example --encoding latin-1)"
CONVERT_ADVICE = "save it as UTF-8 (or UTF-16 with a byte-order mark) first"


def user_path(text: str | Path) -> Path:
    """A path the user typed, ``~`` expanded. ``os.path.expanduser`` leaves ``~nosuchuser/...`` as
    written (``Path.expanduser`` raises RuntimeError there), so a bad path is a clear "not found"."""
    return Path(os.path.expanduser(text))


def decode_text(data: bytes, name: str, encoding: str | None = None, *, advice: str = ENCODING_OPTION_ADVICE) -> str:
    """Bytes -> text: UTF-8 (BOM or not) or UTF-16 with a BOM; binary or undecodable is an error.

    ``advice`` ends the invalid-UTF-8 message: the ``--encoding`` option, for commands that have it.
    """
    if encoding:
        try:
            return data.decode(encoding)
        except LookupError:
            raise InputError(f"unknown encoding '{encoding}'") from None
        except UnicodeDecodeError as exc:
            raise InputError(f"{name} is not valid {encoding} (byte {exc.start})") from None
    for bom, codec in BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom) :].decode(codec)
            except UnicodeDecodeError:
                raise InputError(f"{name} is not valid {codec} text") from None
    if b"\x00" in data[:8192]:
        guessed = _utf16_without_bom(data[:8192])
        if guessed:
            codec = guessed
            how = f"pass --encoding {codec}" if advice == ENCODING_OPTION_ADVICE else advice
            raise InputError(f"{name} looks like UTF-16 text without a byte-order mark; {how}")
        raise InputError(f"{name} looks like a binary file, not text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{name} is not valid UTF-8 (byte {exc.start}); {advice}") from None


def _utf16_without_bom(sample: bytes) -> str | None:
    """``utf-16-le``/``-be`` when every other byte is NUL, as in UTF-16 text of Latin script."""
    even, odd = sample[0::2], sample[1::2]
    if len(odd) < 2:
        return None
    if odd.count(0) >= 0.4 * len(odd) and even.count(0) <= 0.02 * len(even):
        return "utf-16-le"
    if even.count(0) >= 0.4 * len(even) and odd.count(0) <= 0.02 * len(odd):
        return "utf-16-be"
    return None


def bom_codec(data: bytes) -> str | None:
    """The codec named by a byte-order mark at the start of ``data`` (``utf-8``, ``utf-16-le``...), or None."""
    for bom, codec in BOMS:
        if data.startswith(bom):
            return codec
    return None


DEFAULT_MAX_INPUT_MB = 64
_max_input_bytes = DEFAULT_MAX_INPUT_MB * 1_000_000


def set_input_limit(megabytes: int) -> None:
    """The ``max_input_mb`` setting: the most any input file or standard input may hold.

    Set once, when the settings are resolved; every reader here checks it, so ``-f /dev/zero``
    or a 10 GB log is one error line instead of a process reading until memory runs out.
    """
    global _max_input_bytes
    _max_input_bytes = megabytes * 1_000_000


def input_limit() -> int:
    """The most bytes an input may hold (``max_input_mb``)."""
    return _max_input_bytes


def _too_large(name: str) -> InputError:
    return InputError(
        f"{name} is larger than {_max_input_bytes // 1_000_000} MB, the input limit"
        " (raise it with `gptcli config set max_input_mb N` or GPTCLI_MAX_INPUT_MB)"
    )


_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


def read_bytes(path: str | Path) -> bytes:
    """A user's file as bytes, with clear errors for missing, directory, unreadable, device and oversized files.

    Only regular files are read: a FIFO would block for a writer that never comes, a device such
    as ``/dev/zero`` never ends. The file is opened without blocking, so even a FIFO is refused at once.
    """
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise InputError(f"no such file: {p}") from None
    except IsADirectoryError:
        raise InputError(f"{p} is a directory, not a file") from None
    except PermissionError:
        raise InputError(f"cannot read {p}: permission denied") from None
    except OSError as exc:
        raise InputError(f"cannot read {p}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
    except OSError:
        os.close(fd)
        raise
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        if stat.S_ISDIR(info.st_mode):
            raise InputError(f"{p} is a directory, not a file")
        kind = next((label for test, label in _KINDS if test(info.st_mode)), "not a regular file")
        raise InputError(f"{p} is {kind}, not a regular file: pipe it into standard input instead")
    if info.st_size > _max_input_bytes:
        os.close(fd)
        raise _too_large(str(p))
    with os.fdopen(fd, "rb") as f:
        try:
            data = f.read(_max_input_bytes + 1)
        except OSError as exc:
            raise InputError(f"cannot read {p}: {exc.strerror}") from None
    if len(data) > _max_input_bytes:
        raise _too_large(str(p))
    return data


def read_text(path: str | Path, encoding: str | None = None) -> str:
    """Read a user's text file with clear errors for missing, directory, unreadable, binary, bad UTF-8."""
    return decode_text(read_bytes(path), str(path), encoding, advice=CONVERT_ADVICE)


def read_stream_bytes(stream: IO[str], name: str = "standard input") -> bytes:
    """All of a stream's bytes, up to the input limit (``< /dev/zero`` ends with an error, not a MemoryError)."""
    buffer = getattr(stream, "buffer", None)
    if buffer is not None:
        data = buffer.read(_max_input_bytes + 1)
    else:
        try:
            data = stream.read(_max_input_bytes + 1).encode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{name} is not valid UTF-8") from None
    if len(data) > _max_input_bytes:
        raise _too_large(name)
    return bytes(data)


def read_stream(stream: IO[str], name: str = "standard input", encoding: str | None = None) -> str:
    """Read all of a text stream as bytes when possible, so encoding errors are ours to report."""
    return decode_text(read_stream_bytes(stream, name), name, encoding, advice=CONVERT_ADVICE)


def _lock(fd: int) -> bool:
    """An exclusive, non-blocking lock on an open file; ``False`` when another process holds it."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no locks, no sweeping
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, owned by someone else
        return True
    return True


def sweep_stale_temporaries(folder: Path, name: str) -> int:
    """Delete temporary files for ``name`` left by a gptcli process that was killed; returns how many.

    A temporary file is named ``.NAME.PID.RANDOM.tmp`` and locked by its writer while it lives, so
    one whose writer is gone and whose lock is free is debris from a ``kill -9`` or a power cut.
    """
    removed = 0
    prefix = f".{name}."
    try:
        candidates = [p for p in folder.iterdir() if p.name.startswith(prefix) and p.name.endswith(".tmp")]
    except OSError:
        return 0
    for path in candidates:
        pid_text = path.name[len(prefix) :].split(".", 1)[0]
        if not pid_text.isdigit() or _pid_alive(int(pid_text)):
            continue
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            if _lock(fd):
                os.unlink(path)
                removed += 1
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def _temporary_beside(target: Path) -> tuple[int, str]:
    """A new locked temporary file in ``target``'s folder (stale ones of earlier runs removed first)."""
    try:
        return _new_temporary(target)
    except OSError as exc:
        raise InputError(f"cannot write {target}: {exc.strerror or exc}") from None


def _new_temporary(target: Path) -> tuple[int, str]:
    folder = target.parent if str(target.parent) else Path(".")
    sweep_stale_temporaries(folder, target.name)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=folder)
    _lock(fd)
    return fd, tmp


def atomic_write(path: str | Path, text: str, *, encoding: str = "utf-8", mode: int | None = None) -> None:
    """Write ``text`` to a temporary file beside ``path``, fsync it, then rename it into place."""
    atomic_write_bytes(path, text.encode(encoding), mode=mode)


def atomic_write_bytes(path: str | Path, data: bytes, *, mode: int | None = None) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it into place."""
    try:
        replace_file(path, data, mode=mode)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None


def replace_file(path: str | Path, data: bytes, *, mode: int | None = None) -> None:
    """The one atomic write: ``data`` into a temporary file beside ``path``, fsynced, renamed over it.

    ``mode`` defaults to what a plain open() would make (0666 less the umask). Raises ``OSError``,
    for callers that word the failure their own way; the temporary file never stays behind.
    """
    target = Path(path)
    fd, tmp = _new_temporary(target)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if mode is None:  # what a plain open() would have made: 0666 less the umask
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class AtomicTextFile:
    """A text file written piece by piece into a temporary file, renamed into place by ``commit()``.

    Used as a context manager: leaving it without ``commit()`` (an error, Ctrl-C) removes the
    temporary file and leaves any existing file at ``path`` untouched. Newlines are written as given.
    """

    def __init__(self, path: str | Path, *, encoding: str = "utf-8", bom: bool = False) -> None:
        self.target = Path(path)
        fd, self.tmp = _temporary_beside(self.target)
        self.file = os.fdopen(fd, "w", encoding=encoding, newline="")
        if bom:
            self.write("\ufeff")

    def write(self, text: str) -> None:
        try:
            self.file.write(text)
        except OSError as exc:
            self.discard()
            raise InputError(f"cannot write {self.target}: {exc.strerror or exc}") from None

    def commit(self) -> None:
        """Flush, fsync and rename the temporary file over ``path``."""
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self.tmp, 0o666 & ~umask)
            os.replace(self.tmp, self.target)
        except OSError as exc:
            self.discard()
            raise InputError(f"cannot write {self.target}: {exc.strerror or exc}") from None

    def discard(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.file.close()
        with contextlib.suppress(OSError):
            os.unlink(self.tmp)

    def __enter__(self) -> AtomicTextFile:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.file.closed or os.path.exists(self.tmp):
            self.discard()


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """``1 chunk``, ``3 chunks``, ``2 replies``: a count with its noun in the right number."""
    return f"{count:,} {singular if count == 1 else plural_form or singular + 's'}"
