"""A multi-turn chat over an `Engine`: template, history that fits the context, streamed replies.

The prompt of every turn is the whole conversation rendered by the run's template
(``RUN/template.json``, read with `scratchllm.finetune.templates.load_template`). A run without
one (a base model) gets `PlainTemplate`:

    [system text, blank line]
    User: <message>
    Assistant: <reply>
    User: ...
    Assistant:

and stops when the model starts the next ``User:`` line. When the conversation no longer fits
(prompt + reply budget > context), the oldest user/assistant exchanges are dropped, the system
message is kept. The reply budget is ``max_new_tokens`` when one is set; by default it is
`DEFAULT_REPLY_TOKENS`, at most half the context, and a lone message that leaves less room than
that gets whatever room is left.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from scratchllm.errors import ConfigError, ScratchLLMError
from scratchllm.generation.engine import ContextOverflowError, Engine
from scratchllm.generation.sampling import DEFAULT_SAMPLING, SamplingConfig

Message = dict[str, str]
DEFAULT_REPLY_TOKENS = 256  # the reply budget when no max_new_tokens is set


class ChatFormat(Protocol):
    """What a chat needs from a template (`scratchllm.finetune.templates.Template` fits)."""

    name: str

    @property
    def stop_strings(self) -> list[str]: ...

    def encode_prompt(self, tokenizer: Any, messages: Sequence[Message]) -> list[int]: ...

    def stop_token_ids(self, tokenizer: Any) -> list[int]: ...


class PlainTemplate:
    """``User:`` / ``Assistant:`` lines: the fallback for runs saved without a template."""

    name = "plain"
    user, assistant = "User: ", "Assistant:"

    def __init__(self, system: str | None = None) -> None:
        self.system = system

    @property
    def stop_strings(self) -> list[str]:
        return ["\n" + self.user.strip(), "<|endoftext|>"]

    def render_prompt(self, messages: Sequence[Message]) -> str:
        # the conversation's system messages, in order; the template's own text only without any
        # (it is a default, as in scratchllm.finetune.templates)
        systems = [m["content"] for m in messages if m["role"] == "system"]
        if not systems and self.system:
            systems = [self.system]
        parts = [text + "\n\n" for text in systems]
        for m in messages:
            if m["role"] == "system":
                continue
            elif m["role"] == "user":
                parts.append(f"{self.user}{m['content']}\n")
            else:
                parts.append(f"{self.assistant} {m['content']}\n")
        return "".join(parts) + self.assistant

    def encode_prompt(self, tokenizer: Any, messages: Sequence[Message]) -> list[int]:
        return tokenizer.encode(self.render_prompt(messages))

    def stop_token_ids(self, tokenizer: Any) -> list[int]:
        return []


def template_for_run(run_dir: str | Path, system: str | None = None) -> ChatFormat:
    """The run's saved template, or `PlainTemplate` when it has none."""
    from scratchllm.finetune.templates import load_template

    template = load_template(run_dir)
    if template is None:
        return PlainTemplate(system)
    if system is not None:
        template.system = system
    return template


class ChatSession:
    """Conversation state plus the settings replies are generated with."""

    def __init__(
        self,
        engine: Engine,
        template: ChatFormat,
        *,
        system: str | None = None,
        sampling: SamplingConfig = DEFAULT_SAMPLING,
        max_new_tokens: int | None = None,
        seed: int | None = None,
    ) -> None:
        if max_new_tokens is not None and max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        ctx = engine.model.cfg.context_length
        if max_new_tokens is not None and max_new_tokens >= ctx:
            raise ConfigError(
                f"max_new_tokens {max_new_tokens} leaves no room for a message in the model's "
                f"{ctx}-token context; use fewer (or leave it unset)"
            )
        self.engine, self.template = engine, template
        self.system = system
        self.sampling, self.max_new_tokens, self.seed = sampling, max_new_tokens, seed
        self.messages: list[Message] = []
        self.reset()
        if self.messages:  # a system text the tokenizer refuses fails now, not at every reply
            template.encode_prompt(engine.tokenizer, self.messages)

    def reset(self) -> None:
        """Forget the conversation (the system message stays)."""
        self.messages = [{"role": "system", "content": self.system}] if self.system else []

    def prompt_ids(self) -> tuple[list[int], int]:
        """The rendered conversation, dropping the oldest exchanges until the reply fits, and
        the number of tokens the reply may take."""
        tokenizer, ctx = self.engine.tokenizer, self.engine.model.cfg.context_length
        budget = self.max_new_tokens or min(DEFAULT_REPLY_TOKENS, max(1, ctx // 2))
        while True:
            ids = self.template.encode_prompt(tokenizer, self.messages)
            if len(ids) + budget <= ctx:
                return ids, budget
            first = next((i for i, m in enumerate(self.messages) if m["role"] != "system"), None)
            if first is None or first == len(self.messages) - 1:
                if self.max_new_tokens is None and len(ids) < ctx:
                    return ids, ctx - len(ids)  # no budget was asked for: the room that is left
                setting = f"max_new_tokens {self.max_new_tokens}" if self.max_new_tokens else ""
                raise ContextOverflowError(
                    f"the message takes {len(ids)} tokens; "
                    + (f"with {setting} it does not fit" if setting else "it does not fit")
                    + f" the {ctx}-token context"
                )
            # drop the oldest message and the assistant reply that answered it
            drop = 2 if self.messages[first + 1]["role"] == "assistant" else 1
            del self.messages[first : first + drop]

    def reply(self, text: str) -> Iterator[str]:
        """Stream the assistant's answer to ``text``; it joins the history when complete."""
        self.messages.append({"role": "user", "content": text})
        try:
            ids, budget = self.prompt_ids()
        except ScratchLLMError:  # too long, or text the tokenizer refuses: not kept either way
            self.messages.pop()
            raise
        pieces: list[str] = []
        for piece in self.engine.stream(
            ids,
            self.sampling,
            budget,
            stop=self.template.stop_strings,
            stop_token_ids=self.template.stop_token_ids(self.engine.tokenizer),
            seed=self.seed,
        ):
            pieces.append(piece)
            yield piece
        self.messages.append({"role": "assistant", "content": "".join(pieces).strip()})
