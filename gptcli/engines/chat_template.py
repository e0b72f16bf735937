"""GGUF chat templates (Jinja code from the model file), rendered sandboxed and bounded in time and size."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from gptcli.engines import Message
from gptcli.errors import ModelError

TEMPLATE_SECONDS = 5  # a chat template (code from the GGUF file) that runs longer is stopped
TEMPLATE_MAX_CHARS = 8 << 20  # ... or builds a string or list larger than this (8 Mi characters)


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

    Bounded: rendering stops after ``TEMPLATE_SECONDS`` on any thread, and ``*`` and ``**`` may
    not build anything over ``TEMPLATE_MAX_CHARS`` (``'x' * 10**10`` is refused, not allocated).
    Every failure is a ``ModelError`` that says what the template did.
    """

    def __init__(self, template: str, *, eos_token: str, bos_token: str) -> None:
        import jinja2
        import jinja2.ext
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        class IgnoreGenerationTags(jinja2.ext.Extension):
            tags = {"generation"}

            def parse(self, parser: Any) -> Any:
                parser.stream.skip(1)
                return parser.parse_statements(("name:endgeneration",), drop_needle=True)

        class BoundedEnvironment(ImmutableSandboxedEnvironment):
            intercepted_binops = frozenset({"*", "**"})

            def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
                if operator == "*":
                    for seq, n in ((left, right), (right, left)):
                        if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > TEMPLATE_MAX_CHARS:
                            raise ModelError(f"the model's chat template builds a value of {len(seq) * n:,} items (more than {TEMPLATE_MAX_CHARS:,})")
                elif operator == "**" and isinstance(right, int) and abs(right) > 1024:
                    raise ModelError(f"the model's chat template raises a number to the power {right}")
                return super().call_binop(context, operator, left, right)

        environment = BoundedEnvironment(
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
        except MemoryError:
            raise ModelError("the model's chat template ran out of memory") from None
        except ModelError:
            raise
        except Exception as exc:  # the template runs in Jinja's sandbox; any failure is the model's
            reason = str(exc) or type(exc).__name__
            raise ModelError(f"the model's chat template failed: {reason}") from None
        if len(text) > TEMPLATE_MAX_CHARS:
            raise ModelError(f"the model's chat template wrote {len(text):,} characters (more than {TEMPLATE_MAX_CHARS:,})")
        return text
