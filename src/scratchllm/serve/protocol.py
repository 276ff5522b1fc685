"""OpenAI request bodies -> validated generation parameters; OpenAI-shaped errors.

Validation is written out by hand rather than left to a schema library so that every rejection
is a 4xx with OpenAI's error shape (``{"error": {"message", "type", "param", "code"}}``), names
the field and the value, and never lets a bool pass as an int, a NaN as a float, or an unknown
field through silently. Everything that could make a request expensive is bounded here, before
the request reaches the decode loop, so a bad request cannot slow down or break the others.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from scratchllm.errors import ScratchLLMError
from scratchllm.generation import SamplingConfig
from scratchllm.generation.engine import MAX_TOP_LOGPROBS
from scratchllm.serve.config import ServeConfig

INT64 = 1 << 63
MAX_USER_CHARS = 256  # the `user` field: an opaque tag, ignored
MAX_LOGIT_BIAS = 300  # entries in `logit_bias` (OpenAI's limit)
ROLES = ("system", "user", "assistant", "developer")  # developer: OpenAI's newer name for system
MESSAGE_FIELDS = {"role", "content", "name"}
COMMON_FIELDS = {
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "n",
    "stream",
    "stream_options",
    "stop",
    "seed",
    "frequency_penalty",
    "presence_penalty",
    "user",
    "logit_bias",
    "logprobs",
    # bookkeeping fields of OpenAI's API, checked and ignored (nothing is stored or tiered here)
    "store",
    "metadata",
    "service_tier",
    # extensions (vLLM's names), sent by the openai client through `extra_body`
    "top_k",
    "min_p",
    "repetition_penalty",
}
COMPLETION_FIELDS = COMMON_FIELDS | {"prompt", "echo", "best_of", "suffix"}
CHAT_FIELDS = COMMON_FIELDS | {
    "messages",
    "max_completion_tokens",
    "top_logprobs",
    "response_format",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
}


class APIError(Exception):
    """An error answered as OpenAI does: an HTTP status and a JSON ``error`` object."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type = status, message, type
        self.param, self.code, self.headers = param, code, headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def bad(param: str, message: str, code: str = "invalid_value") -> APIError:
    return APIError(400, f"{param}: {message}", param=param, code=code)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object; NaN/Infinity literals, bad UTF-8 and deep nesting are 400s."""
    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError
        raise APIError(400, f"request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise APIError(400, "request body must be a JSON object", code="invalid_json")
    return body


# ------------------------------------------------------------------------------ scalar fields


def get_int(body: dict, name: str, default: int | None, lo: int, hi: int) -> int | None:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad(name, f"must be an integer, got {_show(value)}", "invalid_type")
    if not lo <= value <= hi:
        raise bad(name, f"must be in [{lo}, {hi}], got {_show(value)}")
    return value


def get_float(body: dict, name: str, default: float | None, lo: float, hi: float) -> float | None:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad(name, f"must be a number, got {_show(value)}", "invalid_type")
    if not math.isfinite(value) or not lo <= value <= hi:
        raise bad(name, f"must be in [{lo}, {hi}], got {_show(value)}")
    return float(value)


def get_bool(body: dict, name: str, default: bool, param: str | None = None) -> bool:
    """``param``: the field's full name when ``body`` is nested (``stream_options.x``)."""
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise bad(param or name, f"must be true or false, got {_show(value)}", "invalid_type")
    return value


def get_str(body: dict, name: str, max_chars: int, param: str | None = None) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad(param or name, f"must be a string, got {_show(value)}", "invalid_type")
    if len(value) > max_chars:
        raise bad(param or name, f"longer than {max_chars} characters")
    return value


def require_neutral(body: dict, name: str, *neutral: Any) -> None:
    """A known OpenAI field this server does not implement: only its 'off' values pass."""
    value = body.get(name)
    if value is not None and not any(value == n and type(value) is type(n) for n in neutral):
        raise bad(name, f"is not supported by this server (got {_show(value)})", "unsupported")


# --------------------------------------------------------------------------- request params


@dataclass
class GenParams:
    prompts: list[tuple[int, ...]]  # one per prompt (completions may send several)
    n: int  # choices per prompt
    max_tokens: int
    sampling: SamplingConfig
    stop: tuple[str, ...]
    seed: int | None
    stream: bool
    include_usage: bool
    logprobs: int | None = None  # alternatives per token to report (None: no logprobs)

    @property
    def choices(self) -> int:
        return len(self.prompts) * self.n


def _token_ids(value: Any) -> bool:
    """A non-empty list of integers (not booleans): one prompt given as token ids."""
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(i, int) and not isinstance(i, bool) for i in value)
    )


class Validator:
    """Checks request bodies against the limits of one server and one model."""

    def __init__(self, cfg: ServeConfig, tokenizer: Any, template: Any, context_length: int):
        self.cfg, self.tokenizer, self.template = cfg, tokenizer, template
        self.context_length = context_length
        self.vocab_size = int(getattr(tokenizer, "vocab_size", 0)) or None
        self.specials = tuple(getattr(tokenizer, "special_tokens", {}) or {})

    def _common(self, body: dict, fields: set[str]) -> None:
        unknown = sorted(set(body) - fields)
        if unknown:
            raise bad(unknown[0], "unrecognized request argument", "unknown_parameter")
        model = body.get("model")
        if not isinstance(model, str):
            raise bad("model", f"is required and must be a string, got {_show(model)}")
        if model != self.cfg.model_name:
            raise APIError(
                404,
                f"model {_show(model)} does not exist; this server serves {self.cfg.model_name!r}",
                param="model",
                code="model_not_found",
            )
        get_str(body, "user", MAX_USER_CHARS)
        get_bool(body, "store", False)
        get_str(body, "service_tier", MAX_USER_CHARS)
        self._metadata(body.get("metadata"))

    @staticmethod
    def _metadata(value: Any) -> None:
        """OpenAI's limits: at most 16 string pairs, keys up to 64 and values up to 512 chars."""
        if value is None:
            return
        if not isinstance(value, dict) or len(value) > 16:
            raise bad("metadata", f"must be an object of at most 16 pairs, got {_show(value)}")
        for key, item in value.items():
            if not isinstance(item, str) or len(key) > 64 or len(item) > 512:
                raise bad(
                    "metadata",
                    f"key {_show(key)}: keys are strings of <= 64 characters, values strings "
                    f"of <= 512, got {_show(item)}",
                )

    def _sampling(self, body: dict) -> SamplingConfig:
        top_k = get_int(body, "top_k", None, -1, max(self.vocab_size or 1, 1))
        top_p = get_float(body, "top_p", None, 0.0, 1.0)
        if top_p == 0.0:
            raise bad("top_p", "must be in (0, 1], got 0")
        try:
            return SamplingConfig(
                temperature=get_float(body, "temperature", 1.0, 0.0, 2.0),
                top_p=top_p,
                top_k=top_k if top_k and top_k > 0 else None,  # 0 and -1 mean "off" (vLLM)
                min_p=get_float(body, "min_p", None, 0.0, 1.0),
                repetition_penalty=get_float(body, "repetition_penalty", 1.0, 0.01, 10.0),
                frequency_penalty=get_float(body, "frequency_penalty", 0.0, -2.0, 2.0),
                presence_penalty=get_float(body, "presence_penalty", 0.0, -2.0, 2.0),
                logit_bias=self._logit_bias(body.get("logit_bias")),
            )
        except ScratchLLMError as exc:  # pragma: no cover - the ranges above are tighter
            raise bad("sampling", str(exc)) from None

    def _logit_bias(self, value: Any) -> tuple[tuple[int, float], ...]:
        """OpenAI's map of token id (a string) to a bias in [-100, 100], at most 300 entries."""
        if value is None:
            return ()
        if not isinstance(value, dict):
            raise bad("logit_bias", f"must be an object of token id -> bias, got {_show(value)}")
        if len(value) > MAX_LOGIT_BIAS:
            raise bad("logit_bias", f"at most {MAX_LOGIT_BIAS} entries, got {len(value)}")
        top = (self.vocab_size or 1) - 1
        pairs = []
        for key, bias in value.items():
            if not (isinstance(key, str) and key.isascii() and key.isdigit() and int(key) <= top):
                raise bad("logit_bias", f"keys are token ids in [0, {top}], got {_show(key)}")
            if isinstance(bias, bool) or not isinstance(bias, int | float):
                raise bad(
                    "logit_bias", f"token {key}: the bias must be a number, got {_show(bias)}"
                )
            if not -100 <= bias <= 100:
                raise bad("logit_bias", f"token {key}: the bias must be in [-100, 100], got {bias}")
            pairs.append((int(key), float(bias)))
        return tuple(pairs)

    def _stop(self, body: dict) -> tuple[str, ...]:
        stop = body.get("stop")
        if stop is None:
            return ()
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise bad("stop", "must be a string or a list of strings", "invalid_type")
        if len(stops) > self.cfg.max_stop:
            raise bad("stop", f"at most {self.cfg.max_stop} stop strings, got {len(stops)}")
        for s in stops:
            if not s or len(s) > self.cfg.max_stop_chars:
                raise bad("stop", f"each stop string needs 1..{self.cfg.max_stop_chars} chars")
        return tuple(stops)

    def _check_text(self, text: str, param: str) -> None:
        """User text may not spell a special token: it would forge a document or turn boundary."""
        for special in self.specials:
            if special in text:
                raise bad(param, f"contains the special token {special!r}", "special_token")

    def _finish(
        self,
        body: dict,
        prompts: list[tuple[int, ...]],
        param: str,
        cap_name: str,
        logprobs: int | None = None,
    ):
        cfg, ctx = self.cfg, self.context_length
        n = get_int(body, "n", 1, 1, cfg.max_choices)
        assert n is not None
        # more choices than slots + queue could never be admitted: a 429 would be retried forever
        capacity = min(cfg.max_choices, cfg.max_batch + cfg.max_queue)
        if len(prompts) * n > capacity:
            why = "" if capacity == cfg.max_choices else " (--max-batch + --max-queue)"
            raise bad("n", f"prompts x n must be <= {capacity}{why}, got {len(prompts) * n}")
        longest = max(len(p) for p in prompts)
        if longest >= ctx:
            raise bad(
                param,
                f"the prompt has {longest} tokens; this model's context is {ctx}",
                "context_length_exceeded",
            )
        max_tokens = get_int(body, cap_name, None, 1, ctx)
        if max_tokens is None:
            max_tokens = min(cfg.default_max_tokens, ctx - longest)
        elif longest + max_tokens > ctx:
            raise bad(
                cap_name,
                f"prompt ({longest} tokens) + {cap_name} ({max_tokens}) exceeds the "
                f"{ctx}-token context",
                "context_length_exceeded",
            )
        stream = get_bool(body, "stream", False)
        options = body.get("stream_options")
        include_usage = False
        if options is not None:
            if not stream or not isinstance(options, dict) or set(options) - {"include_usage"}:
                raise bad("stream_options", "must be {'include_usage': bool} with stream=true")
            include_usage = get_bool(
                options, "include_usage", False, "stream_options.include_usage"
            )
        seed = get_int(body, "seed", None, -INT64, INT64 - 1)
        return GenParams(
            prompts=prompts,
            n=n,
            max_tokens=max_tokens,
            sampling=self._sampling(body),
            stop=self._stop(body),
            seed=seed,
            stream=stream,
            include_usage=include_usage,
            logprobs=logprobs,
        )

    # ---------------------------------------------------------------------------- endpoints

    def completion(self, body: dict) -> GenParams:
        self._common(body, COMPLETION_FIELDS)
        require_neutral(body, "echo", False)
        logprobs = get_int(body, "logprobs", None, 0, 5)  # the legacy API's range
        require_neutral(body, "best_of", 1)
        require_neutral(body, "suffix", "")
        prompt = body.get("prompt")
        shapes = "a string, a list of strings, a list of token ids or a list of such lists"
        if isinstance(prompt, str) or _token_ids(prompt):
            prompt = [prompt]  # one prompt
        if not isinstance(prompt, list) or not prompt:
            raise bad("prompt", f"must be {shapes}")
        if len(prompt) > self.cfg.max_choices:
            raise bad("prompt", f"at most {self.cfg.max_choices} prompts, got {len(prompt)}")
        if all(_token_ids(p) for p in prompt):
            ids = [self._ids(p) for p in prompt]
            return self._finish(body, ids, "prompt", "max_tokens", logprobs)
        if not all(isinstance(p, str) for p in prompt):
            raise bad("prompt", f"must be {shapes}")
        if sum(map(len, prompt)) > self.cfg.max_prompt_chars:
            raise bad("prompt", f"longer than {self.cfg.max_prompt_chars} characters")
        for p in prompt:
            self._check_text(p, "prompt")
        encoded = [self._encode(p) for p in prompt]
        return self._finish(body, encoded, "prompt", "max_tokens", logprobs)

    def _ids(self, ids: list[int]) -> tuple[int, ...]:
        top = (self.vocab_size or 1) - 1
        if any(not 0 <= i <= top for i in ids):
            raise bad("prompt", f"token ids must be in [0, {top}]")
        return tuple(ids)

    def _encode(self, text: str) -> tuple[int, ...]:
        ids = self.tokenizer.encode(text)
        if not ids:  # an empty prompt starts a document
            eot = getattr(self.tokenizer, "eot_id", None)
            if eot is None:
                raise bad("prompt", "must not be empty for this tokenizer")
            ids = [eot]
        return tuple(ids)

    def chat(self, body: dict) -> GenParams:
        self._common(body, CHAT_FIELDS)
        top = get_int(body, "top_logprobs", None, 0, MAX_TOP_LOGPROBS)
        logprobs = None
        if get_bool(body, "logprobs", False):
            logprobs = top or 0
        elif top:
            raise bad("top_logprobs", "needs logprobs: true")
        require_neutral(body, "response_format", {"type": "text"})
        require_neutral(body, "tools", [])
        require_neutral(body, "tool_choice", "none")
        get_bool(body, "parallel_tool_calls", False)
        messages = self._messages(body.get("messages"))
        # null is the same as absent, as for every other field
        given = {
            name for name in ("max_tokens", "max_completion_tokens") if body.get(name) is not None
        }
        if len(given) == 2:
            raise bad("max_tokens", "send max_tokens or max_completion_tokens, not both")
        cap = "max_completion_tokens" if "max_completion_tokens" in given else "max_tokens"
        try:
            ids = self.template.encode_prompt(self.tokenizer, messages)
        except ScratchLLMError as exc:  # a template that cannot render this conversation
            raise bad("messages", str(exc)) from None
        if not ids:
            raise bad("messages", "renders to an empty prompt")
        return self._finish(body, [tuple(ids)], "messages", cap, logprobs)

    def _messages(self, messages: Any) -> list[dict[str, str]]:
        cfg = self.cfg
        if not isinstance(messages, list) or not messages:
            raise bad("messages", "must be a non-empty list of messages")
        if len(messages) > cfg.max_messages:
            raise bad("messages", f"at most {cfg.max_messages} messages, got {len(messages)}")
        out, chars = [], 0
        for i, m in enumerate(messages):
            where = f"messages[{i}]"
            if not isinstance(m, dict):
                raise bad(where, f"must be an object, got {_show(m)}", "invalid_type")
            extra = sorted(set(m) - MESSAGE_FIELDS)
            if extra:
                raise bad(f"{where}.{extra[0]}", "is not supported", "unsupported")
            role = m.get("role")
            if role not in ROLES:
                raise bad(f"{where}.role", f"must be one of {ROLES}, got {_show(role)}")
            get_str(m, "name", 64, f"{where}.name")
            content = self._content(m.get("content"), f"{where}.content")
            chars += len(content)
            if chars > cfg.max_prompt_chars:
                raise bad("messages", f"longer than {cfg.max_prompt_chars} characters in all")
            self._check_text(content, f"{where}.content")
            out.append({"role": "system" if role == "developer" else role, "content": content})
        return out

    @staticmethod
    def _content(content: Any, where: str) -> str:
        """A string, or OpenAI's list of ``{"type": "text", "text": ...}`` parts (joined)."""
        if isinstance(content, str):
            return content
        if isinstance(content, list) and content:
            parts = []
            for part in content:
                if (
                    not isinstance(part, dict)
                    or part.get("type") != "text"
                    or not isinstance(part.get("text"), str)
                    or set(part) - {"type", "text"}
                ):
                    raise bad(where, "only text parts {'type': 'text', 'text': str} are supported")
                parts.append(part["text"])
            return "".join(parts)
        raise bad(where, f"must be a string or a list of text parts, got {_show(content)}")
