"""The remote engine: any OpenAI-compatible server (llama.cpp's llama-server, vLLM, Ollama, llama-cpp-python).

Streaming goes through the ``openai`` client; the few extra endpoints (token counts, context size,
served models) through its HTTP library. Both are imported lazily, when an engine is opened.
"""

from __future__ import annotations

import logging
import math
import os
import re
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from gptcli.config import hide_credentials
from gptcli.engines import Chunk, Message, Sampling, Usage
from gptcli.errors import ConfigError, ContextOverflowError, EngineError

log = logging.getLogger("gptcli.remote")

DEFAULT_API_KEY_ENV = "GPTCLI_API_KEY"
DEFAULT_CONTEXT = 4096
DEFAULT_READ_TIMEOUT = 120.0  # seconds without a byte from the server (prompt processing included)
CONNECT_TIMEOUT = 10.0
CONNECT_RETRIES = 2  # extra attempts after a failed connection, only before the first token
RETRY_DELAYS = (0.3, 1.0)
NO_KEY = "no-key"  # sent when no key is set: servers without authentication ignore it
MESSAGE_OVERHEAD = 6  # template tokens around one message (role markers), when counted piecewise
PROMPT_OVERHEAD = 4  # the assistant header the template appends
# a reply is cut past this many characters per token asked for: no tokenizer has pieces this long,
# so only a server ignoring max_tokens (or a hostile one sending 100 MB) reaches it
CHARS_PER_TOKEN_BOUND = 64
UNBOUNDED_REPLY_TOKENS = 32_768  # the bound's token count when no max_tokens is set


def normalize_base_url(url: str) -> str:
    """``host:8080`` -> ``http://host:8080/v1``; a URL with a path is kept (minus a trailing slash)."""
    text = url.strip()
    if not text:
        raise ConfigError("the base URL is empty (give --base-url http://HOST:PORT/v1)")
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urlsplit(text)
    except ValueError:  # an unclosed '[' (IPv6) and the like
        raise ConfigError(f"base URL '{hide_credentials(url)}' is not a valid URL (example: http://127.0.0.1:8080/v1)") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"base URL '{hide_credentials(url)}' is not an http(s) URL (example: http://127.0.0.1:8080/v1)")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ConfigError(f"base URL '{hide_credentials(url)}' has an invalid port") from None
    path = parts.path.rstrip("/") or "/v1"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def server_root(base_url: str) -> str:
    """The server's root URL: llama.cpp and vLLM serve ``/tokenize`` and ``/props`` beside ``/v1``."""
    return base_url[: -len("/v1")] if base_url.endswith("/v1") else base_url


def estimate_tokens(text: str) -> int:
    """A conservative token count without a tokenizer: ASCII bytes / 3, other characters 1.5 each.

    Real tokenizers give about 4 ASCII characters per token and at most about one token per
    CJK character, so this over-counts: chunks sized with it fit the context window.
    """
    ascii_chars = sum(1 for ch in text if ch < "\x80")
    return math.ceil(ascii_chars / 3 + (len(text) - ascii_chars) * 1.5)


@dataclass(frozen=True)
class RemoteConfig:
    """Where the server is and how to talk to it; ``api_key_env`` names the variable with the key."""

    base_url: str
    model: str | None = None
    api_key_env: str = DEFAULT_API_KEY_ENV
    context_length: int | None = None  # explicit (profile or --ctx); else asked from the server
    fallback_context: int | None = None  # used when the server does not tell (settings.ctx)
    timeout: float = DEFAULT_READ_TIMEOUT
    profile: str | None = None  # the [engines.NAME] profile this came from, for messages


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _one_line(text: str, limit: int = 200) -> str:
    from gptcli.textio import sanitize_terminal

    line = sanitize_terminal(" ".join(str(text).split()))  # a server's words: never escape codes on a terminal
    return line if len(line) <= limit else line[: limit - 1] + "…"


class RemoteEngine:
    """Chat with a model served over the OpenAI-compatible HTTP API, streaming the reply.

    Safe to use from several threads at once (``translate --parallel``): the HTTP clients pool
    their connections and the lazily asked server facts are guarded by a lock.
    """

    def __init__(self, config: RemoteConfig) -> None:
        import httpx2
        import openai

        self._openai = openai
        self._httpx = httpx2
        self.config = config
        self.base_url = normalize_base_url(config.base_url)
        self.root_url = server_root(self.base_url)
        self.shown_url = hide_credentials(self.base_url)  # what messages print: no user:password@
        key = os.environ.get(config.api_key_env, "")
        self._key_set = bool(key)
        self._secret = key
        timeout = httpx2.Timeout(config.timeout, connect=CONNECT_TIMEOUT)
        self._client = openai.OpenAI(
            base_url=self.base_url,
            api_key=key or NO_KEY,
            timeout=timeout,
            max_retries=0,  # our own loop retries connection failures only, before the first token
        )
        self._http = httpx2.Client(
            timeout=httpx2.Timeout(min(config.timeout, 30.0), connect=CONNECT_TIMEOUT),
            headers={"Authorization": f"Bearer {key or NO_KEY}"},
        )
        self._lock = threading.RLock()  # reentrant: asking the model name may ask the server
        self._model: str | None = config.model
        self._model_checked = False
        self._served: list[str] | None = None
        self._context: int | None = config.context_length
        self._tokenizer: str | None = None  # "llama.cpp" | "vllm" | "llama-cpp-python" | "estimate"
        self._template_endpoint: bool | None = None
        self._counts: OrderedDict[str, int] = OrderedDict()
        self._counts_lock = threading.Lock()
        self._extra_sampling = "api.openai.com" not in self.base_url  # OpenAI rejects unknown fields

    # ------------------------------------------------------------ names and facts

    @property
    def model_name(self) -> str:
        """The model asked for; without one, the server's only model (asked once)."""
        if self._model is None and not self._model_checked:
            try:
                self._ensure_model()
            except EngineError:  # the next request reports it
                pass
        return self._model or "default"

    @model_name.setter
    def model_name(self, value: str) -> None:
        self._model = value

    @property
    def context_length(self) -> int:
        if self._context is None:
            with self._lock:
                if self._context is None:
                    self._context = self._ask_context() or self.config.fallback_context or DEFAULT_CONTEXT
        return self._context

    def _ask_context(self) -> int | None:
        """The server's context window: llama.cpp's ``/props``, else vLLM's ``max_model_len``."""
        props = self._get_json(f"{self.root_url}/props")
        if isinstance(props, dict):
            settings = props.get("default_generation_settings")
            n_ctx = (settings or {}).get("n_ctx") if isinstance(settings, dict) else None
            n_ctx = n_ctx or props.get("n_ctx")
            if isinstance(n_ctx, int) and n_ctx > 0:
                return n_ctx
        for entry in self._model_entries() or []:
            if entry.get("id") == self.model_name:
                length = entry.get("max_model_len") or entry.get("context_length")
                if isinstance(length, int) and length > 0:
                    return length
        return None

    def _get_json(self, url: str) -> Any:
        try:
            response = self._http.get(url)
        except self._httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        try:
            return response.json()
        except ValueError:
            return None

    def _model_entries(self) -> list[dict[str, Any]] | None:
        """``GET /v1/models`` (``None`` when the server does not list its models)."""
        try:
            page = self._with_retries(self._client.models.list, statuses=(401, 403))
        except _StatusIgnored:
            return None
        entries = []
        for item in page.data:
            entry = item.model_dump() if hasattr(item, "model_dump") else dict(item)
            entries.append(entry)
        return entries

    def served_models(self) -> list[str] | None:
        """The model names the server lists, if it lists them."""
        if self._served is None:
            entries = self._model_entries()
            if entries is None:
                return None
            self._served = [str(e.get("id")) for e in entries if e.get("id")]
        return self._served

    def _ensure_model(self) -> None:
        """Once: pick the served model when none was named, or check the named one is served.

        Some servers (llama-cpp-python's) answer with their own model whatever name is asked;
        checking the list first turns a typo into a clear error instead of a silent substitute.
        """
        if self._model_checked:
            return
        with self._lock:
            if self._model_checked:
                return
            served = self.served_models()
            if self._model is None:
                if served and len(served) == 1:
                    self._model = served[0]
                elif served:
                    raise EngineError(
                        f"the server at {self.shown_url} serves several models ({', '.join(served[:10])}):"
                        " choose one with --model NAME"
                    )
            elif served and not _model_matches(self._model, served):
                raise EngineError(self._unknown_model_message(served))
            self._model_checked = True

    def _unknown_model_message(self, served: Sequence[str] | None) -> str:
        listed = f"; it serves: {', '.join(served[:10])}" if served else ""
        return f"model '{self.model_name}' is not served at {self.shown_url}{listed} (use --model NAME)"

    # ------------------------------------------------------------ token counts

    def tokenize_count(self, text: str) -> int:
        if not text:
            return 0
        with self._counts_lock:
            cached = self._counts.get(text)
        if cached is not None:
            return cached
        count = self._server_count(text)
        if count is None:
            count = estimate_tokens(text)
        if len(text) < 100_000:
            with self._counts_lock:
                self._counts[text] = count
                while len(self._counts) > 512:
                    self._counts.popitem(last=False)
        return count

    @property
    def counts_exactly(self) -> bool:
        """Whether token counts come from the server's tokenizer (not an estimate)."""
        if self._tokenizer is None:
            self.tokenize_count("hello")
        return self._tokenizer != "estimate"

    def _server_count(self, text: str) -> int | None:
        kind = self._tokenizer
        if kind is None:
            with self._lock:
                if self._tokenizer is None:
                    self._tokenizer = self._detect_tokenizer()
                kind = self._tokenizer
        if kind == "estimate":
            return None
        count = self._tokenize_with(kind, text)
        return count

    def _detect_tokenizer(self) -> str:
        for kind in ("llama.cpp", "vllm", "llama-cpp-python"):
            if self._tokenize_with(kind, "Hello world") is not None:
                log.debug("token counts from the server (%s)", kind)
                return kind
        log.debug("the server offers no tokenizer: token counts are estimates")
        return "estimate"

    def _tokenize_with(self, kind: str, text: str) -> int | None:
        if kind == "llama.cpp":
            url, body = f"{self.root_url}/tokenize", {"content": text, "add_special": False}
        elif kind == "vllm":
            url, body = f"{self.root_url}/tokenize", {"model": self.model_name, "prompt": text, "add_special_tokens": False}
        else:
            url, body = f"{self.root_url}/extras/tokenize", {"input": text, "model": self.model_name}
        try:
            response = self._http.post(url, json=body)
            if response.status_code != 200:
                return None
            data = response.json()
        except (self._httpx.HTTPError, ValueError):
            return None
        if not isinstance(data, dict):
            return None
        if isinstance(count := data.get("count"), int):
            return count
        tokens = data.get("tokens")
        return len(tokens) if isinstance(tokens, list) else None

    def count_tokens(self, messages: Sequence[Message]) -> int:
        if not messages:
            return 0
        exact = self._count_with_template(messages)
        if exact is not None:
            return exact
        joined = "\n".join(f"{m['role']}\n{m['content']}" for m in messages)
        return self.tokenize_count(joined) + MESSAGE_OVERHEAD * len(messages) + PROMPT_OVERHEAD

    def _count_with_template(self, messages: Sequence[Message]) -> int | None:
        """Exact counts where the server can apply the chat template (vLLM, llama.cpp)."""
        if not self.counts_exactly or self._template_endpoint is False:
            return None
        payload = [{"role": m["role"], "content": m["content"]} for m in messages]
        try:
            if self._tokenizer == "vllm":
                response = self._http.post(
                    f"{self.root_url}/tokenize",
                    json={"model": self.model_name, "messages": payload, "add_generation_prompt": True},
                )
                data = response.json() if response.status_code == 200 else None
                count = data.get("count") if isinstance(data, dict) else None
            elif self._tokenizer == "llama.cpp":
                response = self._http.post(f"{self.root_url}/apply-template", json={"messages": payload})
                data = response.json() if response.status_code == 200 else None
                prompt = data.get("prompt") if isinstance(data, dict) else None
                count = None
                if isinstance(prompt, str):
                    tokens = self._http.post(f"{self.root_url}/tokenize", json={"content": prompt, "add_special": True})
                    got = tokens.json() if tokens.status_code == 200 else None
                    if isinstance(got, dict) and isinstance(got.get("tokens"), list):
                        count = len(got["tokens"])
            else:
                count = None
        except (self._httpx.HTTPError, ValueError):
            count = None
        if not isinstance(count, int):
            self._template_endpoint = False
            return None
        self._template_endpoint = True
        return count

    # ------------------------------------------------------------ generation

    def _sampling_args(self, sampling: Sampling) -> dict[str, Any]:
        args: dict[str, Any] = {"temperature": sampling.temperature, "top_p": sampling.top_p}
        if sampling.max_tokens:
            args["max_tokens"] = sampling.max_tokens
        if sampling.seed is not None:
            args["seed"] = sampling.seed
        if sampling.stop:
            args["stop"] = list(sampling.stop)
        if self._extra_sampling:  # llama.cpp-style servers read these; vLLM and others ignore them
            args["extra_body"] = {
                "top_k": sampling.top_k,
                "min_p": sampling.min_p,
                "repeat_penalty": sampling.repeat_penalty,
            }
        return args

    def stream(self, messages: Sequence[Message], sampling: Sampling) -> Iterator[Chunk]:
        self._ensure_model()
        payload = [{"role": m["role"], "content": m["content"]} for m in messages]
        args = self._sampling_args(sampling)
        if sampling.json_schema is not None:  # the server constrains the reply (llama.cpp, vLLM, Ollama, OpenAI)
            args["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "reply", "schema": sampling.json_schema},
            }

        def request(stream: bool = True, **override: Any) -> Any:
            options = {**args, **override}
            if stream:
                options["stream_options"] = {"include_usage": True}
            return self._client.chat.completions.create(model=self.model_name, messages=payload, stream=stream, **options)  # type: ignore[arg-type]

        return self._generate(
            request, chat=True, prompt_tokens=lambda: self.count_tokens(messages), max_tokens=sampling.max_tokens
        )

    def complete(self, prompt: str, sampling: Sampling) -> Iterator[Chunk]:
        self._ensure_model()
        args = self._sampling_args(sampling)

        def request(stream: bool = True, **override: Any) -> Any:
            options = {**args, **override}
            if stream:
                options["stream_options"] = {"include_usage": True}
            return self._client.completions.create(model=self.model_name, prompt=prompt, stream=stream, **options)

        return self._generate(
            request, chat=False, prompt_tokens=lambda: self.tokenize_count(prompt), max_tokens=sampling.max_tokens
        )

    def _with_retries(self, request: Callable[..., Any], statuses: tuple[int, ...] | None = None) -> Any:
        """Send the request; connection failures are retried a bounded number of times.

        HTTP errors become one-line ``EngineError``s; with ``statuses``, only those do and the
        others raise ``_StatusIgnored``.
        """
        for attempt in range(CONNECT_RETRIES + 1):
            try:
                return request()
            except self._openai.APIStatusError as exc:
                if statuses is not None and exc.status_code not in statuses:
                    raise _StatusIgnored from None
                raise self._status_error(exc) from None
            except self._openai.APIConnectionError as exc:
                if attempt >= CONNECT_RETRIES or not _retryable(exc):
                    raise self._connection_error(exc) from None
                log.debug("connection to %s failed (%s); retrying", self.shown_url, _reason(exc))
                time.sleep(RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)])
        raise AssertionError("unreachable")

    def _generate(
        self, request: Callable[..., Any], *, chat: bool, prompt_tokens: Callable[[], int], max_tokens: int | None = None
    ) -> Iterator[Chunk]:
        started = time.perf_counter()
        usage = Usage()
        response = self._with_retries(request)  # errors before any output are raised here, by stream()
        return self._chunks(
            request, response, usage, started, chat=chat, prompt_tokens=prompt_tokens, sampling_tokens=max_tokens
        )

    def _chunks(
        self,
        request: Callable[..., Any],
        response: Any,
        usage: Usage,
        started: float,
        *,
        chat: bool,
        prompt_tokens: Callable[[], int],
        sampling_tokens: int | None = None,
    ) -> Iterator[Chunk]:
        got_text = False
        finish: str | None = None
        server_usage = False
        retries = CONNECT_RETRIES
        room = (sampling_tokens or UNBOUNDED_REPLY_TOKENS) * CHARS_PER_TOKEN_BOUND  # characters left
        try:
            while True:
                try:
                    for event in response:
                        text, reason, counts = _event_parts(event, chat=chat)
                        if counts is not None:
                            usage.prompt_tokens = counts[0] or usage.prompt_tokens
                            usage.completion_tokens = counts[1] or usage.completion_tokens
                            usage.cached_tokens = counts[2]
                            server_usage = True
                        if reason:
                            finish = reason
                        if not text:
                            continue
                        if len(text) > room:  # a server ignoring max_tokens: the reply is cut, not stored whole
                            text, finish = text[:room], "length"
                        room -= len(text)
                        now = time.perf_counter()
                        if not got_text:
                            usage.time_to_first_token = now - started
                            got_text = True
                        if not server_usage:
                            usage.completion_tokens += 1  # one event per token on llama.cpp-style servers
                        usage.total_time = now - started
                        if text:
                            yield Chunk(text, usage)
                        if room <= 0:
                            log.debug("the server at %s sent more than max_tokens allows: cut", self.shown_url)
                            break
                    break
                except self._openai.APIStatusError as exc:
                    raise self._status_error(exc) from None
                except self._openai.APIConnectionError as exc:
                    if got_text:
                        raise EngineError(
                            f"the server at {self.shown_url} went away in the middle of the reply"
                            f" ({_reason(exc)}); the reply is incomplete"
                        ) from None
                    if retries <= 0 or not _retryable(exc):
                        raise self._connection_error(exc) from None
                    retries -= 1
                    _close(response)
                    time.sleep(RETRY_DELAYS[0])
                    response = self._with_retries(request)
                except self._openai.APIError as exc:  # a `data: {"error": ...}` event: the server failed mid-stream
                    detail = _one_line(getattr(exc, "message", "") or str(exc))
                    raise EngineError(self._scrub(
                        f"the server at {self.shown_url} reported an error in the middle of the reply"
                        f"{': ' + detail if detail else ''}; the reply is incomplete"
                    )) from None
                except (ValueError, _Malformed) as exc:  # JSONDecodeError is a ValueError
                    raise EngineError(self._scrub(
                        f"the server at {self.shown_url} sent a malformed stream event ({_one_line(str(exc), 80)});"
                        " the reply is incomplete"
                    )) from None
            if finish is None and not got_text:
                raise self._explain_empty(request)
            if finish is None:
                raise EngineError(
                    f"the server at {self.shown_url} ended the reply early without saying why; the reply is incomplete"
                )
        finally:
            _close(response)
            usage.total_time = time.perf_counter() - started
            usage.time_to_first_token = usage.time_to_first_token or usage.total_time
        usage.finish_reason = "length" if finish == "length" else "stop"
        if not server_usage:  # the server did not say: count with its tokenizer, if it has one
            try:
                if self.counts_exactly:
                    usage.prompt_tokens = prompt_tokens()
            except EngineError:
                pass
        yield Chunk("", usage)

    def _explain_empty(self, request: Callable[..., Any]) -> EngineError:
        """A stream that ended before any text: ask again without streaming to learn why.

        llama-cpp-python's server answers a streamed request that cannot run (an input longer than
        the context window) with an empty stream; the same request unstreamed returns the error.
        """
        try:
            self._with_retries(lambda: request(stream=False, max_tokens=1))
        except EngineError as exc:
            return exc
        return EngineError(f"the server at {self.shown_url} ended the stream without a reply")

    # ------------------------------------------------------------ errors

    def _scrub(self, text: str) -> str:
        """No key (in any letter case: servers echo it upper-cased) and no URL password in a message."""
        if self._secret:
            text = re.sub(re.escape(self._secret), "***", text, flags=re.IGNORECASE)
        return hide_credentials(text)

    def _connection_error(self, exc: BaseException) -> EngineError:
        reason = _reason(exc)
        hint = ""
        if reason == "connection refused":
            hint = ": is the server running? (`gptcli serve` starts one)"
        elif reason == "timed out":
            hint = f" (read timeout {self.config.timeout:g} s; set `timeout` in the engine profile)"
        return EngineError(self._scrub(f"cannot reach the server at {self.shown_url}: {reason}{hint}"))

    def _status_error(self, exc: Any) -> EngineError:
        status = exc.status_code
        detail = _server_message(exc)
        where = f"the server at {self.shown_url}"
        if status in (401, 403):
            word = "401 Unauthorized" if status == 401 else "403 Forbidden"
            if self._key_set:
                text = f"{where} rejected the API key from ${self.config.api_key_env} ({word})"
            else:
                text = (
                    f"{where} requires an API key ({word}): set it in the environment variable"
                    f" {self.config.api_key_env}"
                )
                if self.config.profile:
                    text += f" (or name another with api_key_env in [engines.{self.config.profile}])"
            return EngineError(self._scrub(text))
        if status == 404:
            try:
                served = self.served_models()
            except EngineError:
                served = None
            if served and not _model_matches(self.model_name, served):
                return EngineError(self._scrub(self._unknown_model_message(served)))
            if "model" in detail.lower():
                return EngineError(self._scrub(f"{where}: model '{self.model_name}' not found ({detail})"))
            return EngineError(
                self._scrub(f"{where} answered 404 Not Found for {exc.request.url.path}: is the base URL right (it usually ends in /v1)?")
            )
        if status == 429:
            retry = exc.response.headers.get("retry-after")
            after = f"; retry after {retry} s" if retry else "; retry later"
            return EngineError(self._scrub(f"{where} is busy (429 Too Many Requests{': ' + detail if detail else ''}){after} or lower --parallel"))
        if status >= 500:
            return EngineError(self._scrub(f"{where} failed (HTTP {status}{': ' + detail if detail else ''})"))
        if _is_context_error(detail):
            return ContextOverflowError(self._scrub(f"the input does not fit the server's context window: {detail}"))
        return EngineError(self._scrub(f"{where} rejected the request (HTTP {status}{': ' + detail if detail else ''})"))


class _StatusIgnored(Exception):
    """An HTTP error the caller treats as 'the server does not offer this'."""


class _Malformed(Exception):
    """A stream event of the wrong shape (the openai client does not validate streamed chunks)."""


def _event_parts(event: Any, *, chat: bool) -> tuple[str, str | None, tuple[int, int, int] | None]:
    """(text, finish reason, (prompt, completion, cached) token counts) of one streamed event.

    Every field is checked: a server may send ``choices`` as a string, a ``delta`` without
    ``content``, or numbers where text belongs, and the client hands those on unvalidated.
    """
    counts: tuple[int, int, int] | None = None
    raw_usage = getattr(event, "usage", None)
    if raw_usage:
        prompt = getattr(raw_usage, "prompt_tokens", None)
        completion = getattr(raw_usage, "completion_tokens", None)
        details = getattr(raw_usage, "prompt_tokens_details", None)
        cached = getattr(details, "cached_tokens", None)
        if not all(v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 0) for v in (prompt, completion, cached)):
            raise _Malformed("usage holds something other than token counts")
        counts = (prompt or 0, completion or 0, cached or 0)
    choices = getattr(event, "choices", None) or ()
    if not isinstance(choices, (list, tuple)):
        raise _Malformed("'choices' is not a list")
    texts: list[str] = []
    finish: str | None = None
    for choice in choices:
        holder = getattr(choice, "delta", None) if chat else choice
        text = getattr(holder, "content" if chat else "text", None) if holder is not None else None
        reason = getattr(choice, "finish_reason", None)
        if (chat and holder is None) or not isinstance(text, (str, type(None))) or not isinstance(reason, (str, type(None))):
            raise _Malformed("a choice without text")
        if text:
            texts.append(text)
        finish = reason or finish
    return "".join(texts), finish, counts


def _close(response: Any) -> None:
    try:
        response.close()
    except Exception:  # closing a broken connection may fail; nothing to do about it
        pass


def _model_matches(name: str, served: Sequence[str]) -> bool:
    """Lenient: Ollama serves ``llama3:latest`` for ``llama3``; llama-cpp-python lists paths."""
    wanted = name.lower()
    for entry in served:
        candidate = entry.lower()
        if wanted in (candidate, candidate.removesuffix(":latest"), candidate.rsplit("/", 1)[-1]):
            return True
    return False


def _reason(exc: BaseException) -> str:
    """Why a connection failed, in a few words."""
    for cause in _causes(exc):
        name = type(cause).__name__
        if isinstance(cause, ConnectionRefusedError) or "refused" in str(cause).lower():
            return "connection refused"
        if isinstance(cause, socket.gaierror) or "name or service not known" in str(cause).lower():
            return "unknown host"
        if name in ("ConnectTimeout", "ReadTimeout", "WriteTimeout", "PoolTimeout", "TimeoutError") or isinstance(cause, TimeoutError):
            return "timed out"
        if name == "RemoteProtocolError" or isinstance(cause, ConnectionResetError):
            return "the connection was closed"
        if name == "UnsupportedProtocol":
            return "unsupported URL scheme"
    return "connection failed"


def _retryable(exc: BaseException) -> bool:
    """Connection failures worth another try: refused, reset or closed; not read timeouts."""
    for cause in _causes(exc):
        if type(cause).__name__ in ("ReadTimeout", "WriteTimeout", "UnsupportedProtocol"):
            return False
    return True


def _server_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    message: Any = None
    if isinstance(body, dict):
        message = body.get("message") or body.get("detail") or body.get("error")
        if isinstance(message, dict):
            message = message.get("message")
    if not message:
        try:
            data = exc.response.json()
            if isinstance(data, dict):
                message = data.get("detail") or data.get("message") or data.get("error")
                if isinstance(message, dict):
                    message = message.get("message")
        except Exception:
            message = None
    if not message:
        try:
            message = exc.response.text
        except Exception:
            message = ""
    return _one_line(message if isinstance(message, str) else str(message))


def _is_context_error(detail: str) -> bool:
    return bool(re.search(r"context (length|window|size)|exceed|too long|n_ctx", detail, re.IGNORECASE))


_engines: dict[tuple[RemoteConfig, str], RemoteEngine] = {}
_engines_lock = threading.Lock()


def open_remote_engine(config: RemoteConfig) -> RemoteEngine:
    """One engine (and connection pool) per configuration, key and process."""
    key = (config, os.environ.get(config.api_key_env, ""))
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            engine = RemoteEngine(config)
            _engines[key] = engine
        return engine


__all__ = ["RemoteConfig", "RemoteEngine", "open_remote_engine", "normalize_base_url", "estimate_tokens"]
