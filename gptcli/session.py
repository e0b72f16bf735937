"""A saved conversation: the history store, the turns read back from it, and the model's saved KV state."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gptcli.conversation import Conversation, Turn, turns_from_messages
from gptcli.errors import GptcliError

if TYPE_CHECKING:
    from gptcli.engines import Engine
    from gptcli.store import ConversationStore, SessionInfo

Notice = Callable[[str], None]

NOTHING_TO_CONTINUE = "no saved conversation to continue: starting a new one"


class Session:
    """One stored conversation, for a one-shot ``--continue`` and for the chat alike.

    It reads the conversation back from the store (rows become turns, the session's own system
    prompt first), restores the model's saved KV state into an engine so a long conversation is not
    re-read, and saves that state again after new turns — unless the conversation was deleted
    meanwhile, since the state is derived from its text and nothing of a deleted chat may stay.
    """

    def __init__(self, settings: Any, notice: Notice, store: ConversationStore | None, info: SessionInfo) -> None:
        self.settings = settings
        self.notice = notice
        self.store = store
        self.info = info

    @property
    def id(self) -> str:
        return str(self.info.id)

    @property
    def name(self) -> str:
        """How notices name it: its title, else its id."""
        return getattr(self.info, "title", None) or f"#{self.info.id}"

    @classmethod
    def latest_or_named(cls, settings: Any, notice: Notice, store: ConversationStore, name: str | None) -> Session | None:
        """The session ``name`` (id or title; ``StoreError`` if none), else the latest one.

        With no session at all, says that a new conversation starts and returns ``None``.
        """
        info = store.find_session(name) if name else store.latest_session()
        if info is None:
            notice(NOTHING_TO_CONTINUE)
            return None
        return cls(settings, notice, store, info)

    def turns(self, fallback_system: str | None = None) -> tuple[str | None, list[Turn]]:
        """(system, turns) as stored; the session's system prompt wins over a stored system row."""
        assert self.store is not None
        rows = [(m.role, m.content, bool(getattr(m, "interrupted", False))) for m in self.store.messages(self.id)]
        stored_system, turns = turns_from_messages(rows)
        return getattr(self.info, "system", None) or stored_system or fallback_system, turns

    def conversation(self, fallback_system: str | None = None) -> Conversation:
        system, turns = self.turns(fallback_system)
        return Conversation(system=system, turns=turns)

    def resumed_notice(self, turns: int) -> None:
        self.notice(f"resumed {self.name}: {turns} exchange{'s' if turns != 1 else ''}")

    def restore_state(self, engine: Engine) -> int:
        """Load the saved KV state into ``engine`` when a valid one exists; returns the tokens restored."""
        return restore_state(self.settings, self.id, engine, self.notice)

    def keep_state(self, engine: Engine) -> None:
        """Save ``engine``'s KV state for this session (or drop it, if the session was deleted meanwhile)."""
        keep_state(self.settings, self.store, self.id, engine, self.notice)


def restore_state(settings: Any, session_id: str, engine: Engine, notice: Notice) -> int:
    from gptcli import kvstate

    return kvstate.restore_session(settings, session_id, engine, notice)


def keep_state(settings: Any, store: ConversationStore | None, session_id: Any, engine: Engine, notice: Notice) -> None:
    """Save the KV state of ``session_id``; if the store no longer has it, delete the saved state instead."""
    if session_id is None:
        return
    from gptcli import kvstate

    if store is not None:
        try:
            store.find_session(str(session_id))
        except GptcliError:  # deleted meanwhile (`history rm` elsewhere): nothing may stay of it
            kvstate.forget_session(str(session_id))
            return
    kvstate.keep_session(settings, session_id, engine, notice)
