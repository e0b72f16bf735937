"""Many replies at once: items worked on by threads, a batched engine driven from the calling thread."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

from gptcli.engines import Concurrent
from gptcli.errors import EngineError

Item = TypeVar("Item")
Result = TypeVar("Result")


def run_workers(
    items: Sequence[Item],
    work: Callable[[Item], Result],
    arrived: Callable[[int, Result], None],
    *,
    width: int,
    batched: Concurrent | None = None,
    cancel: threading.Event | None = None,
    quiet: tuple[type[BaseException], ...] = (),
    name: str = "worker",
) -> None:
    """``work`` on every item from ``width`` daemon threads; ``arrived(index, result)`` on this thread.

    Results arrive in the order they finish. ``batched`` (an engine's ``parallel(n)`` form, which
    the workers' ``work`` streams from) is driven here by ``pump`` between results, and closed at
    the end: the replies still in flight then end with an error, and the model is the workers' no
    more. The first exception a worker raises (``KeyboardInterrupt`` included) is raised here and
    stops the rest; one of ``quiet`` ends its worker without a word (``work`` saw ``cancel`` set).
    ``cancel`` is set when this returns or raises.
    """
    cancel = cancel or threading.Event()
    todo: queue.Queue[int] = queue.Queue()
    for index in range(len(items)):
        todo.put(index)
    results: queue.Queue[tuple[int, Result] | BaseException] = queue.Queue()

    def worker() -> None:
        while not cancel.is_set():
            try:
                index = todo.get_nowait()
            except queue.Empty:
                return
            try:
                results.put((index, work(items[index])))
            except quiet:
                return
            except BaseException as exc:  # handed to the calling thread, which stops the rest
                results.put(exc)
                return
            finally:
                if batched is not None:
                    batched.wake()

    def next_result() -> tuple[int, Result] | BaseException:
        while True:
            try:
                if batched is None:
                    return results.get(timeout=0.2)
                batched.pump(0.2)
                return results.get_nowait()
            except queue.Empty:
                if not any(t.is_alive() for t in threads) and results.empty():
                    raise EngineError(f"the {name} workers stopped without a result") from None

    threads = [threading.Thread(target=worker, daemon=True, name=f"{name}-{k}") for k in range(width)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(len(items)):
            got = next_result()
            if isinstance(got, BaseException):
                raise got
            arrived(*got)
    finally:
        cancel.set()
        if batched is not None:
            batched.close()
            for thread in threads:
                thread.join(timeout=5)
