"""Prompt templates: how a conversation becomes the exact token sequence a model was tuned on.

A conversation is a list of messages ``{"role": "system" | "user" | "assistant", "content": str}``;
a user message may also carry ``"input"`` (the Alpaca "### Input:" section). Two templates:

- ``alpaca``: the Alpaca prompt ("Below is an instruction that describes a task. ...", then
  ``### Instruction:``, ``### Input:``, ``### Response:``); each response ends with the tokenizer's
  ``<|endoftext|>``.
- ``chat``: special turn tokens ``<|system|>``, ``<|user|>``, ``<|assistant|>``, each turn closed by
  ``<|end|>`` (added to the tokenizer and the model's vocabulary by ``extend_vocabulary``).

A template renders a conversation as *segments*: markup (may contain special tokens) and content
(user text, always encoded as plain text so it can never forge a turn marker). ``encode`` keeps
per-token flags saying which tokens belong to assistant responses, so training can mask the prompt.
The template used for training is saved as ``RUN/template.json``; ``chat``, ``generate`` and the
server read it back with ``load_template(run_dir)`` and build prompts with ``encode_prompt``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scratchllm.errors import ConfigError, DataError
from scratchllm.train.checkpoint import atomic_write_json, read_json

TEMPLATE_FILE = "template.json"
TEMPLATE_FORMAT = "scratchllm-template"
ENDOFTEXT = "<|endoftext|>"
ROLES = ("system", "user", "assistant")
ALPACA_PREAMBLE = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request."
)
CHAT_TOKENS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}
CHAT_END = "<|end|>"

Message = dict[str, str]


@dataclass(frozen=True)
class Segment:
    text: str
    markup: bool  # True: template text (special tokens allowed); False: user-supplied content
    response: bool  # True: part of an assistant response (what the loss is taken on)


def check_messages(messages: Any, where: str = "conversation") -> list[Message]:
    """Validate a conversation; raises DataError naming the message and field at fault."""
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: 'messages' must be a non-empty list, got {messages!r:.60}")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise DataError(f"{where}: message {i} must be an object, got {type(m).__name__}")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise DataError(f"{where}: message {i} has role {role!r}; expected one of {ROLES}")
        if "content" not in m:
            raise DataError(f"{where}: message {i} field 'content' is missing")
        if not isinstance(content, str):
            raise DataError(
                f"{where}: message {i} field 'content' must be a string, got "
                f"{type(content).__name__}"
            )
        if not isinstance(m.get("input", ""), str):
            raise DataError(f"{where}: message {i} field 'input' must be a string")
    return messages


class Template:
    """Base class: subclasses say how each message is rendered."""

    name = ""
    special_tokens: tuple[str, ...] = ()  # tokens the template adds to the vocabulary
    end_token = ENDOFTEXT  # ends every response; generation stops there

    def __init__(self, system: str | None = None) -> None:
        self.system = system  # default system prompt (chat) / preamble (alpaca); None = built-in

    # -------------------------------------------------------------------------- rendering
    def segments(self, messages: Sequence[Message], *, generation: bool) -> list[Segment]:
        """Render a conversation; with ``generation`` it ends where the next response starts."""
        raise NotImplementedError

    def render(self, messages: Sequence[Message]) -> str:
        """The whole conversation as training text."""
        return "".join(s.text for s in self.segments(messages, generation=False))

    def render_prompt(self, messages: Sequence[Message]) -> str:
        """The text a model is given to write the next assistant response."""
        return "".join(s.text for s in self.segments(messages, generation=True))

    @property
    def stop_strings(self) -> list[str]:
        """Decoded texts at which generation should stop (the first is ``end_token``)."""
        return [self.end_token, ENDOFTEXT] if self.end_token != ENDOFTEXT else [ENDOFTEXT]

    # --------------------------------------------------------------------------- encoding
    def encode(
        self, tokenizer: Any, messages: Sequence[Message], *, generation: bool = False
    ) -> tuple[list[int], list[bool]]:
        """Token ids and, per id, whether it belongs to an assistant response."""
        self.check_tokenizer(tokenizer)
        allowed = {*self.special_tokens, ENDOFTEXT} & set(tokenizer.special_tokens)
        ids: list[int] = []
        flags: list[bool] = []
        for seg in self.segments(messages, generation=generation):
            if seg.markup:
                piece = tokenizer.encode(seg.text, allowed_special=allowed)
            else:
                piece = tokenizer.encode(seg.text, disallowed_special=())  # literals stay text
            ids += piece
            flags += [seg.response] * len(piece)
        return ids, flags

    def encode_prompt(self, tokenizer: Any, messages: Sequence[Message]) -> list[int]:
        """Ids of ``render_prompt(messages)`` exactly as training encoded them."""
        return self.encode(tokenizer, messages, generation=True)[0]

    def stop_token_ids(self, tokenizer: Any) -> list[int]:
        specials = tokenizer.special_tokens
        return [specials[s] for s in dict.fromkeys(self.stop_strings) if s in specials]

    def check_tokenizer(self, tokenizer: Any) -> None:
        missing = [
            t for t in (*self.special_tokens, self.end_token) if t not in _specials(tokenizer)
        ]
        if missing:
            raise ConfigError(
                f"template {self.name!r} needs special token(s) {missing} that the tokenizer "
                "lacks; extend it with scratchllm.finetune.templates.extend_vocabulary"
            )

    # ------------------------------------------------------------------------------ files
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": TEMPLATE_FORMAT,
            "version": 1,
            "name": self.name,
            "system": self.system,
            "special_tokens": list(self.special_tokens),
            "end_token": self.end_token,
            "stop_strings": self.stop_strings,
        }


def _specials(tokenizer: Any) -> dict[str, int]:
    return dict(getattr(tokenizer, "special_tokens", {}) or {})


class AlpacaTemplate(Template):
    """The Alpaca prompt (Taori et al. 2023); needs only ``<|endoftext|>``."""

    name = "alpaca"

    def segments(self, messages: Sequence[Message], *, generation: bool) -> list[Segment]:
        check_messages(list(messages))
        system = next((m["content"] for m in messages if m["role"] == "system"), None)
        out = [Segment((system or self.system or ALPACA_PREAMBLE) + "\n\n", True, False)]
        for m in messages:
            if m["role"] == "user":
                out += [
                    Segment("### Instruction:\n", True, False),
                    Segment(m["content"], False, False),
                ]
                if m.get("input"):
                    out += [
                        Segment("\n\n### Input:\n", True, False),
                        Segment(m["input"], False, False),
                    ]
                out.append(Segment("\n\n### Response:\n", True, False))
            elif m["role"] == "assistant":
                out += [Segment(m["content"], False, True), Segment(ENDOFTEXT, True, True)]
                out.append(Segment("\n\n", True, False))
        if not generation:
            while out and not out[-1].response:  # end on the final response's <|endoftext|>
                out.pop()
        return out


class ChatTemplate(Template):
    """Turns marked by special tokens: ``<|user|>\\n...<|end|>\\n<|assistant|>\\n...<|end|>``."""

    name = "chat"
    special_tokens = (*CHAT_TOKENS.values(), CHAT_END)
    end_token = CHAT_END

    def segments(self, messages: Sequence[Message], *, generation: bool) -> list[Segment]:
        check_messages(list(messages))
        out: list[Segment] = []
        if self.system and not any(m["role"] == "system" for m in messages):
            out += self._turn("system", self.system)
        for m in messages:
            content = m["content"] + ("\n\n" + m["input"] if m.get("input") else "")
            out += self._turn(m["role"], content)
        if generation:
            out.append(Segment(CHAT_TOKENS["assistant"] + "\n", True, False))
        else:
            while out and not out[-1].response:
                out.pop()
        return out

    @staticmethod
    def _turn(role: str, content: str) -> list[Segment]:
        response = role == "assistant"
        return [
            Segment(CHAT_TOKENS[role] + "\n", True, False),
            Segment(content, False, response),
            Segment(CHAT_END, True, response),
            Segment("\n", True, False),
        ]


TEMPLATES: dict[str, type[Template]] = {"alpaca": AlpacaTemplate, "chat": ChatTemplate}


def get_template(name: str, system: str | None = None) -> Template:
    if name not in TEMPLATES:
        raise ConfigError(f"unknown template {name!r}; known: {', '.join(TEMPLATES)}")
    return TEMPLATES[name](system)


def save_template(template: Template, run_dir: str | Path) -> Path:
    path = Path(run_dir) / TEMPLATE_FILE
    atomic_write_json(path, template.to_dict())
    return path


def load_template(run_dir: str | Path) -> Template | None:
    """The template a run was tuned with, or None for a run without one (a base model)."""
    path = Path(run_dir) / TEMPLATE_FILE
    if not path.is_file():
        return None
    record = read_json(path)
    if not isinstance(record, dict) or record.get("format") != TEMPLATE_FORMAT:
        raise ConfigError(f"{path}: not a scratchllm template file")
    system = record.get("system")
    if system is not None and not isinstance(system, str):
        raise ConfigError(f"{path}: field 'system' must be a string or null")
    return get_template(str(record.get("name")), system)


def extend_vocabulary(tokenizer: Any, model: Any, tokens: Sequence[str]) -> tuple[Any, Any]:
    """Add special ``tokens`` to a BPE tokenizer and rows for them to a GPT's embedding/head.

    Returns ``(tokenizer, model)``, new objects when something was added (the inputs are left
    alone). New rows start at the mean of the existing embeddings, so the new tokens begin as an
    "average" token instead of a random direction that disturbs the tuned model.
    """
    from scratchllm.model import GPTModel
    from scratchllm.tokenizer import BPETokenizer

    missing = [t for t in tokens if t not in _specials(tokenizer)]
    if not missing:
        return tokenizer, model
    if not isinstance(tokenizer, BPETokenizer):
        raise ConfigError(
            f"adding special tokens {missing} needs a byte-level BPE tokenizer, got "
            f"{type(tokenizer).__name__}; use the 'alpaca' template"
        )
    specials = _specials(tokenizer)
    first = max(len(tokenizer.tokens), model.cfg.vocab_size, tokenizer.vocab_size)
    specials.update({t: first + i for i, t in enumerate(missing)})
    new_tok = BPETokenizer(
        tokenizer.tokens, tokenizer.pattern, specials, merges=tokenizer.merges, name=tokenizer.name
    )
    return new_tok, resize_vocabulary(model, new_tok.vocab_size, GPTModel)


def resize_vocabulary(model: Any, vocab_size: int, model_cls: type) -> Any:
    """A copy of ``model`` with ``vocab_size`` embedding/head rows (old rows kept, new = mean)."""
    from dataclasses import replace

    import torch

    old_n = model.cfg.vocab_size
    cfg = replace(model.cfg, vocab_size=vocab_size)
    device = next(model.parameters()).device
    new = model_cls(cfg).to(device)
    state = model.state_dict()
    grown = {}
    for name, tensor in state.items():
        if (
            tensor.dim() >= 1
            and tensor.shape[0] == old_n
            and name.endswith(("wte.weight", "lm_head.weight"))
        ):
            extra = tensor.mean(dim=0, keepdim=True).expand(vocab_size - old_n, *tensor.shape[1:])
            grown[name] = torch.cat([tensor, extra], dim=0)
        else:
            grown[name] = tensor
    new.load_state_dict(grown)
    new.train(model.training)
    return new
