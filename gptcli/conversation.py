"""A chat's messages and how they are fitted into the model's context window, never silently."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gptcli.engines import Engine, Message, Sampling
from gptcli.errors import ContextOverflowError, GptcliError

POLICIES = ("summarize", "drop", "stop")

SUMMARY_HEADING = "Summary of the earlier conversation:"
SUMMARY_SYSTEM = (
    "You condense conversations. Write a short, factual note of what was said: names, facts, "
    "numbers, decisions and open questions. No greeting, no commentary."
)
SUMMARY_REQUEST = "Condense this conversation into a note of at most {words} words.\n\n{transcript}"


class ContextFullError(ContextOverflowError):
    """The conversation no longer fits and the overflow policy is ``stop``."""


@dataclass
class Turn:
    """One exchange: what the user said and what the model answered (maybe cut short)."""

    user: str
    reply: str
    interrupted: bool = False


@dataclass(frozen=True)
class TokenBudget:
    """How the context window is spent, counted with the model's own tokenizer."""

    context: int  # the window, in tokens
    system: int  # the system prompt (with the chat template's framing)
    summary: int  # the note standing in for condensed turns
    history: int  # the visible turns
    reply_reserve: int  # kept free for the next reply when fitting the history
    visible_turns: int
    hidden_turns: int  # dropped or summarized: stored, but no longer seen by the model

    @property
    def used(self) -> int:
        return self.system + self.summary + self.history

    @property
    def free(self) -> int:
        return max(0, self.context - self.used)

    def describe(self, max_tokens: int) -> str:
        """The answer to ``/tokens``: the window's use (the figure the status line shows) and the room
        the next reply has, at most ``max_tokens``."""
        turns = f"{self.visible_turns} turn{'s' if self.visible_turns != 1 else ''}"
        parts = [f"system {self.system}"]
        if self.summary:
            parts.append(f"summary {self.summary}")
        parts.append(f"history {self.history} ({turns})")
        line = f"context {self.used}/{self.context} tokens: " + " + ".join(parts)
        room = min(max_tokens, self.free)
        capped = f" (capped at {max_tokens}: /set max_tokens)" if max_tokens <= self.free else ""
        line += f"; {self.free} left: the next reply may use {room}{capped}"
        if self.hidden_turns:
            line += f"; {self.hidden_turns} older turn{'s' if self.hidden_turns != 1 else ''} out of view (still stored)"
        return line


@dataclass(frozen=True)
class Fitted:
    """The messages for the next request, and the one-line notice when history had to make room."""

    messages: list[Message]
    notice: str | None = None
    prompt_tokens: int = 0


Summarizer = Callable[[Sequence[Message], Sampling], str]


def reply_reserve(context: int, max_tokens: int | None, *, floor: int = 16) -> int:
    """Tokens kept free for the reply when fitting history: the reply limit, at most a quarter of the window.

    The quarter is at least ``floor`` tokens (the knowledge base's answers keep 256).
    """
    quarter = max(floor, context // 4)
    return min(max_tokens, quarter) if max_tokens else quarter


@dataclass
class Conversation:
    """The system prompt, every turn, and which of the oldest turns the model no longer sees.

    What the model sees (``messages``) only changes when a turn is added or when overflow makes
    room, so between turns the new prompt starts with the old one and llama.cpp reuses its cache.
    """

    system: str | None = None
    turns: list[Turn] = field(default_factory=list)
    hidden: int = 0  # the oldest turns left out of view (dropped or summarized)
    summary: str | None = None  # stands in for (some of) the hidden turns

    # ------------------------------------------------------------ what the model sees

    def system_text(self) -> str | None:
        parts = [p for p in (self.system, f"{SUMMARY_HEADING}\n{self.summary}" if self.summary else None) if p]
        return "\n\n".join(parts) if parts else None

    def messages(self, pending: str | None = None) -> list[Message]:
        """The messages the model is given: system (with the summary note), visible turns, ``pending``."""
        messages: list[Message] = []
        system = self.system_text()
        if system:
            messages.append({"role": "system", "content": system})
        for turn in self.turns[self.hidden :]:
            messages.append({"role": "user", "content": turn.user})
            messages.append({"role": "assistant", "content": turn.reply})
        if pending is not None:
            messages.append({"role": "user", "content": pending})
        return messages

    @property
    def visible_turns(self) -> list[Turn]:
        return self.turns[self.hidden :]

    # ------------------------------------------------------------ changes

    def add_turn(self, user: str, reply: str, interrupted: bool = False) -> Turn:
        turn = Turn(user, reply, interrupted)
        self.turns.append(turn)
        return turn

    def pop_turn(self) -> Turn | None:
        """Remove the last exchange (``/undo``, ``/retry``); ``None`` when there is none."""
        if not self.turns:
            return None
        turn = self.turns.pop()
        if self.hidden > len(self.turns):
            self.hidden = len(self.turns)
            if self.hidden == 0:
                self.summary = None
        return turn

    def clear(self) -> None:
        self.turns.clear()
        self.hidden = 0
        self.summary = None

    # ------------------------------------------------------------ counting

    def budget(self, engine: Engine, max_tokens: int | None = None) -> TokenBudget:
        """Where the window goes now: system prompt, summary note, visible history, room left."""
        system_tokens = summary_tokens = 0
        if self.system:
            system_tokens = engine.count_tokens([{"role": "system", "content": self.system}])
        system = self.system_text()
        if system:
            with_note = engine.count_tokens([{"role": "system", "content": system}])
            summary_tokens = with_note - system_tokens
        total = engine.count_tokens(self.messages()) if (system or self.visible_turns) else 0
        history = max(0, total - system_tokens - summary_tokens)
        return TokenBudget(
            context=engine.context_length,
            system=system_tokens,
            summary=summary_tokens,
            history=history,
            reply_reserve=reply_reserve(engine.context_length, max_tokens),
            visible_turns=len(self.visible_turns),
            hidden_turns=self.hidden,
        )

    # ------------------------------------------------------------ fitting

    def fit(
        self,
        engine: Engine,
        pending: str,
        *,
        policy: str = "summarize",
        max_tokens: int | None = None,
        summarize: Summarizer | None = None,
    ) -> Fitted:
        """The messages for sending ``pending``, applying the overflow policy when they do not fit.

        Raises ``ContextOverflowError`` when ``pending`` cannot fit even alone with the system
        prompt, and ``ContextFullError`` under the ``stop`` policy.
        """
        if policy not in POLICIES:
            raise GptcliError(f"unknown overflow policy '{policy}' (choose {', '.join(POLICIES)})")
        context = engine.context_length
        reserve = reply_reserve(context, max_tokens)
        limit = context - reserve
        messages = self.messages(pending)
        need = engine.count_tokens(messages)
        if need <= limit:
            return Fitted(messages, None, need)

        alone: list[Message] = [{"role": "system", "content": self.system}] if self.system else []
        alone.append({"role": "user", "content": pending})
        alone_tokens = engine.count_tokens(alone)
        if alone_tokens > limit:
            raise ContextOverflowError(
                f"this message takes {alone_tokens} tokens with the system prompt, more than the"
                f" {limit} the {context}-token context window can give it (keeping {reserve} for the reply):"
                " shorten it, or restart with a larger --ctx"
            )
        if policy != "stop" and not self.visible_turns and self.summary:  # only the note is in the way
            self.summary = None
            return self._refit(engine, pending, limit, "context full: the note summarizing older turns was dropped")
        if policy == "stop" or not self.visible_turns:
            raise ContextFullError(
                f"the conversation no longer fits the context window ({need} tokens needed, {limit} available"
                f" with {reserve} kept for the reply): /new starts afresh, /undo removes the last exchange,"
                " /set overflow summarize or drop lets gptcli make room"
            )
        # make generous room, so that the next turns fit too and the cached prefix stays valid
        target = max(limit - max(limit // 3, 1), alone_tokens)
        if policy == "drop":
            dropped = self._hide_until(engine, pending, target)
            return self._refit(engine, pending, limit, _dropped_notice(dropped))
        return self._summarize(engine, pending, limit, target, max_tokens, summarize)

    def _hide_until(self, engine: Engine, pending: str, target: int) -> int:
        """Hide the oldest visible turns until the request needs at most ``target`` tokens."""
        hidden = 0
        while self.visible_turns and engine.count_tokens(self.messages(pending)) > target:
            self.hidden += 1
            hidden += 1
        return hidden

    def _refit(self, engine: Engine, pending: str, limit: int, notice: str) -> Fitted:
        messages = self.messages(pending)
        need = engine.count_tokens(messages)
        while need > limit and self.visible_turns:  # the summary came out too long: more turns go
            self.hidden += 1
            messages = self.messages(pending)
            need = engine.count_tokens(messages)
        if need > limit and self.summary:
            self.summary = None
            notice += "; the summary note did not fit and was dropped"
            messages = self.messages(pending)
            need = engine.count_tokens(messages)
        return Fitted(messages, notice, need)

    def _summarize(
        self,
        engine: Engine,
        pending: str,
        limit: int,
        target: int,
        max_tokens: int | None,
        summarize: Summarizer | None,
    ) -> Fitted:
        context = engine.context_length
        note_budget = max(24, min(200, context // 8))
        # the oldest turns whose removal brings the request under target, with room for the note
        start = self.hidden
        count = 0
        while start + count < len(self.turns):
            count += 1
            trial = Conversation(self.system, self.turns, start + count, "x " * note_budget)
            if engine.count_tokens(trial.messages(pending)) <= target:
                break
        chosen = self.turns[start : start + count]
        request = summary_request(self.summary, chosen, words=max(20, note_budget * 2 // 3))
        while len(chosen) > 1 and engine.count_tokens(request) > context - note_budget:
            chosen = chosen[:-1]  # the request itself must fit: condense fewer turns
            request = summary_request(self.summary, chosen, words=max(20, note_budget * 2 // 3))
        note = ""
        failure = ""
        if summarize is None:
            failure = "no summarizer"
        elif engine.count_tokens(request) > context - note_budget:
            failure = "the turns to condense are too long to summarize"
        else:
            try:
                note = summarize(request, Sampling(temperature=0.2, top_p=0.9, max_tokens=note_budget)).strip()
            except ContextOverflowError as exc:
                failure = str(exc)
            if not note and not failure:
                failure = "the model wrote an empty summary"
        if failure:
            dropped = self._hide_until(engine, pending, target)
            return self._refit(engine, pending, limit, f"could not summarize ({failure}); " + _dropped_notice(dropped))
        self.summary = note
        self.hidden = start + len(chosen)
        n = len(chosen)
        notice = (
            f"context full: the {n} oldest turn{'s' if n != 1 else ''} in view"
            f" {'were' if n != 1 else 'was'} condensed into a short note the model sees instead"
            " (history keeps them all)"
        )
        return self._refit(engine, pending, limit, notice)


def _dropped_notice(n: int) -> str:
    return (
        f"context full: the {n} oldest turn{'s' if n != 1 else ''} left what the model sees"
        " (history keeps them all)"
    )


def summary_request(previous: str | None, turns: Sequence[Turn], *, words: int) -> list[Message]:
    """The messages asking the model to condense ``turns`` (and an earlier note) into one note."""
    lines: list[str] = []
    if previous:
        lines.append(f"Earlier note: {previous}")
    for turn in turns:
        lines.append(f"User: {turn.user}")
        lines.append(f"Assistant: {turn.reply}")
    transcript = "\n".join(lines)
    return [
        {"role": "system", "content": SUMMARY_SYSTEM},
        {"role": "user", "content": SUMMARY_REQUEST.format(words=words, transcript=transcript)},
    ]


def turns_from_messages(messages: Sequence[tuple[str, str, bool]]) -> tuple[str | None, list[Turn]]:
    """Rebuild (system, turns) from stored ``(role, content, interrupted)`` rows, in order.

    A user message without an answer (the reply failed before a word came) becomes a turn with an
    empty reply; assistant messages without a question are attached to an empty user turn.
    """
    system: str | None = None
    turns: list[Turn] = []
    pending: str | None = None
    for role, content, interrupted in messages:
        if role == "system":
            system = content
        elif role == "user":
            if pending is not None:
                turns.append(Turn(pending, ""))
            pending = content
        elif role == "assistant":
            turns.append(Turn(pending or "", content, interrupted))
            pending = None
    if pending is not None:
        turns.append(Turn(pending, ""))
    return system, turns
