"""One family of exceptions; the command layer alone turns them into a stderr line and an exit code."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gptcli.render import OutputClosed, Reply


class GptcliError(Exception):
    """An error the user can act on. ``str(err)`` is the one line shown on stderr."""

    exit_code = 1


class UsageError(GptcliError):
    """The command line asked for something impossible (exit code 2)."""

    exit_code = 2


class ConfigError(GptcliError):
    """The config file or a setting is invalid."""


class InputError(GptcliError):
    """Input text or file cannot be used (missing, binary, bad encoding, empty)."""


class ModelError(GptcliError):
    """A model cannot be found, validated or loaded."""


class EngineError(GptcliError):
    """Generation failed (remote server errors, context overflow...)."""


class ContextOverflowError(EngineError):
    """A message cannot fit the model's context window."""


class TemplateError(GptcliError):
    """A prompt template is missing, malformed, or lacks variables."""


class StoreError(GptcliError):
    """The history store cannot be opened or written."""


class Interrupted(GptcliError):
    """The user interrupted the operation (exit code 130)."""

    exit_code = 130


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C (the partial reply is kept) but ending the process (exit 143).

    ``Terminated.received`` stays true once the signal came, so loops that survive a Ctrl-C
    (the chat prompt) know to stop.
    """

    received = False


class ReplyCut(Exception):
    """A reply cut short by a failure after it began: a server that died mid-reply, stdout closed or
    full, JSON that does not follow the schema.

    ``partial`` is what came (marked interrupted), for the caller to keep in the history; ``cause``
    is the failure itself, which the caller then raises for the command layer to report. Not a
    ``GptcliError``: it is caught where the reply is saved, never shown.
    """

    def __init__(self, cause: GptcliError | OutputClosed, partial: Reply) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.partial = partial
