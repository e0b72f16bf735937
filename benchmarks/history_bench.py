"""Build a history of 10,000 sessions / 100,000 messages and time `history list` and `history search`.

Usage: .venv/bin/python benchmarks/history_bench.py [--sessions 10000] [--turns 5] [--keep DIR]
Prints a Markdown table (the figures in benchmarks/history.md come from it).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gptcli.engines import Usage  # noqa: E402
from gptcli.store import ConversationStore  # noqa: E402

WORDS = (
    "the a of to and in is it that for you with on as this be are was at by or from have not but can "
    "model token context window python docker compose kubernetes server client request response error "
    "database index query table session message history search export import file folder path config "
    "install package version release build test benchmark speed memory cache thread process signal "
    "email draft meeting friday budget report summary translate french german chinese japanese spanish "
    "recipe garden travel paris berlin rome london tokyo weather music guitar piano novel poem story"
).split()
RARE = ["zanzibar", "quokka", "ptolemy", "marzipan", "fjord", "xylophone"]


def sentence(rng: random.Random, n: int) -> str:
    # a Zipf-like draw: common words often, topic words now and then
    words = [WORDS[min(int(rng.paretovariate(1.1)) - 1, len(WORDS) - 1)] if rng.random() < 0.5 else rng.choice(WORDS) for _ in range(n)]
    if rng.random() < 0.01:
        words[rng.randrange(n)] = rng.choice(RARE)
    return " ".join(words).capitalize() + "."


def build(path: Path, sessions: int, turns: int, seed: int = 7) -> float:
    """Fill the store through its public API, one transaction per turn as gptcli does."""
    rng = random.Random(seed)
    started = time.perf_counter()
    with ConversationStore.open(path) as store:
        for _ in range(sessions):
            info = store.create_session(model="smollm2-135m", template="ask", system="You are gptcli.")
            for _ in range(turns):
                user = sentence(rng, rng.randint(5, 25))
                reply = " ".join(sentence(rng, rng.randint(8, 30)) for _ in range(rng.randint(1, 6)))
                store.add_turn(info.id, user, reply, Usage(prompt_tokens=40, completion_tokens=120, time_to_first_token=0.1, total_time=1.3))
    return time.perf_counter() - started


def timed(action: Callable[[], object], repeat: int) -> tuple[float, float]:
    """(median, max) milliseconds over ``repeat`` runs, after one warm-up."""
    action()
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        action()
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples), max(samples)


def command_ms(args: list[str], home: Path, repeat: int) -> tuple[float, float, float]:
    """(median wall ms, max wall ms, median CPU ms) of the whole ``gptcli`` process."""
    import resource

    exe = str(Path(sys.executable).parent / "gptcli")
    env = {**os.environ, "GPTCLI_HOME": str(home)}
    cpu: list[float] = []

    def run() -> None:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([exe, *args], env=env, capture_output=True, check=args[:2] != ["history", "search"])
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append((after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1000)

    median, worst = timed(run, repeat)
    return median, worst, statistics.median(cpu[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--turns", type=int, default=5, help="exchanges per session (2 messages each)")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--keep", type=Path, help="build (or reuse) the store in this folder and keep it")
    args = parser.parse_args()

    home = args.keep or Path(tempfile.mkdtemp(prefix="gptcli-bench-"))
    home.mkdir(parents=True, exist_ok=True)
    path = home / "history.db"
    build_s = None
    if not path.exists():
        build_s = build(path, args.sessions, args.turns)
    def open_and_list() -> None:
        with ConversationStore.open(path) as fresh:
            fresh.list_sessions(20)

    with ConversationStore.open(path) as store:
        n_sessions = store.count_sessions()
        rows: list[tuple[str, tuple[float, ...]]] = [
            ("open the store + list 20 newest (API)", timed(open_and_list, args.repeat)),
            ("list 20 newest (API)", timed(lambda: store.list_sessions(20), args.repeat)),
            ("list 100 newest (API)", timed(lambda: store.list_sessions(100), args.repeat)),
            ("search rare word 'quokka' (API)", timed(lambda: store.search("quokka"), args.repeat)),
            ("search topic word 'docker' (API)", timed(lambda: store.search("docker"), args.repeat)),
            ("search two words 'paris weather' (API)", timed(lambda: store.search("paris weather"), args.repeat)),
            ("search commonest word 'the' (API)", timed(lambda: store.search("the"), args.repeat)),
            ("search prefix 'pian*' (API)", timed(lambda: store.search("pian*"), args.repeat)),
            ("find_session by id prefix (API)", timed(lambda: store.find_session(store.latest_session().id[:10]), args.repeat)),  # type: ignore[union-attr]
        ]
    n_messages = sqlite3.connect(path).execute("SELECT count(*) FROM messages").fetchone()[0]
    repeat_cli = max(5, args.repeat // 4)
    rows += [
        ("`gptcli history list` (whole process)", command_ms(["history", "list"], home, repeat_cli)),
        ("`gptcli history search docker` (whole process)", command_ms(["history", "search", "docker"], home, repeat_cli)),
        ("`gptcli history search the` (whole process)", command_ms(["history", "search", "the"], home, repeat_cli)),
        ("`gptcli --version` (process start, for reference)", command_ms(["--version"], home, repeat_cli)),
    ]

    size_mb = sum(p.stat().st_size for p in home.glob("history.db*")) / 1e6
    print(f"Store: {n_sessions:,} sessions, {n_messages:,} messages, {size_mb:.0f} MB on disk", end="")
    print(f" (built in {build_s:.0f} s, one transaction per turn)" if build_s else "")
    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}")
    print(f"Load average during the run: {os.getloadavg()[0]:.1f}")
    print()
    print("| operation | median ms | max ms | process CPU ms |")
    print("| --- | ---: | ---: | ---: |")
    for name, figures in rows:
        cpu = f"{figures[2]:.0f}" if len(figures) > 2 else ""
        print(f"| {name} | {figures[0]:.1f} | {figures[1]:.1f} | {cpu} |")
    if not args.keep:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
