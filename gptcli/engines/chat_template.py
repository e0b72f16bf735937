"""GGUF chat templates (Jinja code from the model file), rendered sandboxed and bounded in time and size."""

from __future__ import annotations

import json
import operator
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from gptcli.engines import Message
from gptcli.errors import ModelError

TEMPLATE_SECONDS = 5  # a chat template (code from the GGUF file) that runs longer is stopped

# a rendered chat prompt is at most a context window of text: 10 million characters is hundreds of
# times the longest real one, and a few tens of MB of memory
TEMPLATE_MAX_CHARS = 10_000_000
MAX_INT_BITS = 4096  # ``10**10`` is 34 bits; ``10**10**10`` would take minutes and gigabytes


class TemplateTooLarge(SecurityError):
    """A template asked for a value beyond the bounds (a string of billions of characters)."""


def _size(value: Any) -> int | None:
    return len(value) if isinstance(value, (str, bytes, list, tuple)) else None


def _checked_repeat(sequence: Any, times: Any) -> None:
    if isinstance(times, int) and not isinstance(times, bool) and (size := _size(sequence)) is not None:
        if size * max(times, 0) > TEMPLATE_MAX_CHARS:
            raise TemplateTooLarge(
                f"it builds a value of {size * times:,} characters or items (at most {TEMPLATE_MAX_CHARS:,})"
            )


class BoundedSandboxedEnvironment(ImmutableSandboxedEnvironment):
    """``ImmutableSandboxedEnvironment`` whose ``*``, ``**``, ``+`` and padding filters are bounded."""

    intercepted_binops = frozenset(["*", "**", "+"])

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in ("center", "indent"):
            self.filters[name] = self._bounded_filter(self.filters[name], name)

    @staticmethod
    def _bounded_filter(original: Any, name: str) -> Any:
        def bounded(value: Any, width: Any = 80, *args: Any, **kwargs: Any) -> Any:
            text = str(value)
            width_number = width if isinstance(width, int) and not isinstance(width, bool) else len(str(width))
            grows = width_number * max(text.count("\n") + 1, 1) if name == "indent" else width_number
            if grows > TEMPLATE_MAX_CHARS:
                raise TemplateTooLarge(f"its '{name}' filter pads to {grows:,} characters (at most {TEMPLATE_MAX_CHARS:,})")
            return original(value, width, *args, **kwargs)

        return bounded

    def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
        if operator_name == "*":
            _checked_repeat(left, right)
            _checked_repeat(right, left)
        elif operator_name == "**":
            if isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right > 0:
                if left.bit_length() * right > MAX_INT_BITS:
                    raise TemplateTooLarge(f"it computes a number of about {left.bit_length() * right:,} bits")
            if isinstance(right, (int, float)) and abs(right) > MAX_INT_BITS:
                raise TemplateTooLarge(f"it raises a number to the power {right}")
        elif operator_name == "+":
            left_size, right_size = _size(left), _size(right)
            if left_size is not None and right_size is not None and left_size + right_size > TEMPLATE_MAX_CHARS:
                raise TemplateTooLarge(f"it joins values into {left_size + right_size:,} characters or items")
        return {"*": operator.mul, "**": operator.pow, "+": operator.add}[operator_name](left, right)


def failure_reason(exc: BaseException) -> str:
    """Why a chat template failed, never empty: a ``MemoryError`` has no message of its own."""
    if isinstance(exc, MemoryError):
        return "it ran out of memory"
    text = str(exc).strip()
    return text or type(exc).__name__



class _TimeUp(Exception):
    pass


def run_bounded(render: Callable[[], str], seconds: float) -> str:
    """``render()``, stopped after ``seconds`` on any thread.

    A trace function set on this thread alone sees every line the compiled template runs and
    raises once the time is up; unlike SIGALRM it works off the main thread (translation renders
    prompts in worker threads). Rendering a prompt takes about a millisecond; tracing makes it a
    few times that.
    """
    deadline = time.monotonic() + seconds

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        if time.monotonic() > deadline:
            raise _TimeUp
        return tracer

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        return render()
    finally:
        sys.settrace(previous)


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None, sort_keys: bool = False) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


class ChatTemplate:
    """A GGUF chat template (Jinja), rendered the way llama-cpp-python's ``Jinja2ChatFormatter``
    and Hugging Face's transformers do: sandboxed, trimmed blocks, loop controls, ``{% generation %}``
    ignored, ``tojson`` without ASCII escapes, ``raise_exception`` and ``strftime_now``.

    Bounded: rendering stops after ``TEMPLATE_SECONDS`` on any thread, and no operator or filter
    may build anything over ``TEMPLATE_MAX_CHARS`` (``'x' * 10**10`` is refused, not allocated).
    Every failure is a ``ModelError`` that says what the template did.
    """

    def __init__(self, template: str, *, eos_token: str, bos_token: str) -> None:
        import jinja2
        import jinja2.ext

        class IgnoreGenerationTags(jinja2.ext.Extension):
            tags = {"generation"}

            def parse(self, parser: Any) -> Any:
                parser.stream.skip(1)
                return parser.parse_statements(("name:endgeneration",), drop_needle=True)

        environment = BoundedSandboxedEnvironment(
            loader=jinja2.BaseLoader(),
            trim_blocks=True,
            lstrip_blocks=True,
            extensions=[IgnoreGenerationTags, jinja2.ext.loopcontrols],
        )
        environment.filters["tojson"] = _tojson
        self._template = environment.from_string(template)
        self.eos_token, self.bos_token = eos_token, bos_token

    def render(self, messages: list[Message]) -> str:
        """The prompt text for ``messages``, ending where the assistant's reply begins."""

        def raise_exception(message: str) -> None:
            raise ValueError(message)

        def render() -> str:
            return str(
                self._template.render(
                    messages=messages,
                    eos_token=self.eos_token,
                    bos_token=self.bos_token,
                    raise_exception=raise_exception,
                    add_generation_prompt=True,
                    strftime_now=lambda f: time.strftime(f),
                )
            )

        try:
            text = run_bounded(render, TEMPLATE_SECONDS)
        except _TimeUp:
            raise ModelError(f"the model's chat template ran for more than {TEMPLATE_SECONDS} s and was stopped") from None
        except RecursionError:
            raise ModelError("the model's chat template recursed without end") from None
        except (Exception, MemoryError) as exc:  # the template runs in Jinja's sandbox; any failure is the model's
            raise ModelError(f"the model's chat template failed: {failure_reason(exc)}") from None
        if len(text) > TEMPLATE_MAX_CHARS:
            raise ModelError(f"the model's chat template wrote {len(text):,} characters (more than {TEMPLATE_MAX_CHARS:,})")
        return text
