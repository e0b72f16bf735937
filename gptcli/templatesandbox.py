"""A Jinja sandbox for a model's chat template that also bounds memory: no string or number without limit.

Jinja's sandbox stops attribute escapes (``__class__``) but not ``'x' * 10**10``: that asks for
10 GB and ends in a ``MemoryError`` whose message is empty. Here the operators that can grow a
value (``*``, ``**``, ``+``) and the filters that pad (``center``, ``indent``) check the size
they would make first and refuse with a reason a user can read.
"""

from __future__ import annotations

import operator
from typing import Any

from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

# a rendered chat prompt is at most a context window of text: 10 million characters is hundreds of
# times the longest real one, and a few tens of MB of memory
MAX_TEMPLATE_VALUE = 10_000_000
MAX_INT_BITS = 4096  # ``10**10`` is 34 bits; ``10**10**10`` would take minutes and gigabytes


class TemplateTooLarge(SecurityError):
    """A template asked for a value beyond the bounds (a string of billions of characters)."""


def _size(value: Any) -> int | None:
    return len(value) if isinstance(value, (str, bytes, list, tuple)) else None


def _checked_repeat(sequence: Any, times: Any) -> None:
    if isinstance(times, int) and not isinstance(times, bool) and (size := _size(sequence)) is not None:
        if size * max(times, 0) > MAX_TEMPLATE_VALUE:
            raise TemplateTooLarge(
                f"it builds a value of {size * times:,} characters or items (at most {MAX_TEMPLATE_VALUE:,})"
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
            if grows > MAX_TEMPLATE_VALUE:
                raise TemplateTooLarge(f"its '{name}' filter pads to {grows:,} characters (at most {MAX_TEMPLATE_VALUE:,})")
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
            if left_size is not None and right_size is not None and left_size + right_size > MAX_TEMPLATE_VALUE:
                raise TemplateTooLarge(f"it joins values into {left_size + right_size:,} characters or items")
        return {"*": operator.mul, "**": operator.pow, "+": operator.add}[operator_name](left, right)


def failure_reason(exc: BaseException) -> str:
    """Why a chat template failed, never empty: a ``MemoryError`` has no message of its own."""
    if isinstance(exc, MemoryError):
        return "it ran out of memory"
    text = str(exc).strip()
    return text or type(exc).__name__
