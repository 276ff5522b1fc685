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
(prompt + ``max_new_tokens`` > context), the oldest user/assistant exchanges are dropped, the
system message is kept.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from scratchllm.generation.engine import ContextOverflowError, Engine
from scratchllm.generation.sampling import DEFAULT_SAMPLING, SamplingConfig

Message = dict[str, str]


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
        parts = [self.system + "\n\n"] if self.system else []
        for m in messages:
            if m["role"] == "system":
                parts.insert(0, m["content"] + "\n\n")
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
        max_new_tokens: int = 256,
        seed: int | None = None,
    ) -> None:
        self.engine, self.template = engine, template
        self.system = system
        self.sampling, self.max_new_tokens, self.seed = sampling, max_new_tokens, seed
        self.messages: list[Message] = []
        self.reset()

    def reset(self) -> None:
        """Forget the conversation (the system message stays)."""
        self.messages = [{"role": "system", "content": self.system}] if self.system else []

    def prompt_ids(self) -> list[int]:
        """The rendered conversation, dropping the oldest exchanges until the reply fits."""
        tokenizer, ctx = self.engine.tokenizer, self.engine.model.cfg.context_length
        while True:
            ids = self.template.encode_prompt(tokenizer, self.messages)
            if len(ids) + self.max_new_tokens <= ctx:
                return ids
            first = next((i for i, m in enumerate(self.messages) if m["role"] != "system"), None)
            if first is None or first == len(self.messages) - 1:
                raise ContextOverflowError(
                    f"the message takes {len(ids)} tokens; with max_new_tokens "
                    f"{self.max_new_tokens} it does not fit the {ctx}-token context"
                )
            # drop the oldest message and the assistant reply that answered it
            drop = 2 if self.messages[first + 1]["role"] == "assistant" else 1
            del self.messages[first : first + drop]

    def reply(self, text: str) -> Iterator[str]:
        """Stream the assistant's answer to ``text``; it joins the history when complete."""
        self.messages.append({"role": "user", "content": text})
        try:
            ids = self.prompt_ids()
        except ContextOverflowError:
            self.messages.pop()
            raise
        pieces: list[str] = []
        for piece in self.engine.stream(
            ids,
            self.sampling,
            self.max_new_tokens,
            stop=self.template.stop_strings,
            stop_token_ids=self.template.stop_token_ids(self.engine.tokenizer),
            seed=self.seed,
        ):
            pieces.append(piece)
            yield piece
        self.messages.append({"role": "assistant", "content": "".join(pieces).strip()})
