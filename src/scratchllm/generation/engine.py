"""Fast decoding: `DecodeBatch` (step-level, continuous batching) and `Engine` (whole requests).

A `DecodeBatch` has a fixed number of slots over one `SlotKVCache`. `add` prefills prompts
(several at once, left-padded with an attention mask) and parks each in a free slot; every `step`
feeds one token per slot through the model, samples, and reports per request the new text and,
when it ends (end-of-text token, stop string or ``max_new_tokens``), its `Completion`; the slot
is free again at once. Requests may join and leave between any two steps, which is what a server
needs. `Engine` wraps it for the common cases: `generate` a batch of prompts, `stream` one.

Beyond the context: ``overflow="error"`` (default) refuses a request whose prompt plus
``max_new_tokens`` exceeds the cache; ``"slide"`` keeps going by rebuilding a full slot's cache
from its last ``SLIDE_KEEP`` fraction of tokens (positions restart at 0, as the reference's
window does).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from scratchllm.errors import ScratchLLMError
from scratchllm.generation.cache import SlotKVCache
from scratchllm.generation.decode_step import make_step
from scratchllm.generation.reference import left_pad, positions_from_mask
from scratchllm.generation.sampling import (
    DEFAULT_SAMPLING,
    SamplingConfig,
    TokenHistory,
    sample_next_token,
)
from scratchllm.generation.text import TextStream
from scratchllm.model import KVCache

OVERFLOW_POLICIES = ("error", "slide")
SLIDE_KEEP = 0.75  # fraction of the cache a slide keeps: 1/4 of the window is free afterwards


class ContextOverflowError(ScratchLLMError, ValueError):
    """A request that does not fit in the model's context under the ``error`` policy."""


@dataclass(frozen=True)
class Request:
    prompt_ids: tuple[int, ...]  # the prompt, already tokenized (at least one id)
    sampling: SamplingConfig = DEFAULT_SAMPLING
    max_new_tokens: int = 100
    stop: tuple[str, ...] = ()  # stop strings (not included in the text)
    stop_token_ids: tuple[int, ...] = ()  # ids that end the reply besides the end-of-text id
    seed: int | None = None  # seeds this request's own generator (None: torch's global RNG)
    # report each output token's log-probability and this many most likely alternatives
    # (None: none); taken from the model's own distribution, before penalties and temperature
    logprobs: int | None = None

    def __post_init__(self) -> None:
        if self.logprobs is not None and not 0 <= self.logprobs <= MAX_TOP_LOGPROBS:
            raise ValueError(f"logprobs must be in [0, {MAX_TOP_LOGPROBS}], got {self.logprobs}")
        if len(self.prompt_ids) == 0:
            raise ValueError("a request needs at least one prompt token")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if any(not s for s in self.stop):
            raise ValueError("stop strings must be non-empty")


MAX_TOP_LOGPROBS = 20  # alternatives per token a request may ask for (OpenAI's limit)


@dataclass(frozen=True)
class TokenLogprob:
    """An output token's log-probability and the most likely alternatives at its position."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()  # (id, logprob), most likely first


@dataclass
class Completion:
    prompt_ids: list[int]
    token_ids: list[int]  # generated ids, without the end-of-text / stop token id
    text: str  # decoded reply, cut before the first stop string
    finish_reason: str  # "eot" | "stop" | "length" | "cancelled"
    logprobs: list[TokenLogprob] | None = None  # one per token_ids entry, when requested


@dataclass
class StepEvent:
    request_id: int
    token_id: int  # the id sampled this step
    text: str  # text released this step (may be '' while a character or stop string is open)
    completion: Completion | None = None  # set on the step the request finishes
    logprob: TokenLogprob | None = None  # of this step's token, when requested (not for eot)


@dataclass
class _Sequence:
    request_id: int
    request: Request
    stream: TextStream
    generator: torch.Generator | None
    history: TokenHistory | None
    ids: list[int] = field(default_factory=list)  # prompt + output, incl. the pending token
    output: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None  # per output token, when the request asks


class DecodeBatch:
    """Slots of a batch that decode together one token per step; see the module docstring."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer,
        slots: int,
        *,
        max_len: int | None = None,
        overflow: str = "error",
        step_mode: str = "auto",
    ) -> None:
        if overflow not in OVERFLOW_POLICIES:
            raise ValueError(f"overflow must be one of {OVERFLOW_POLICIES}, got {overflow!r}")
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        param = next(model.parameters())
        self.model, self.tokenizer, self.overflow = model, tokenizer, overflow
        self.cfg = model.cfg
        self.device = param.device
        max_len = self.cfg.context_length if max_len is None else max_len
        self.cache = SlotKVCache(self.cfg, slots, max_len, device=self.device, dtype=param.dtype)
        self.tokens = torch.zeros(slots, dtype=torch.long, device=self.device)  # next inputs
        self.active = torch.zeros(slots, dtype=torch.long, device=self.device)  # 1 = in use
        self.seqs: list[_Sequence | None] = [None] * slots
        self._lengths = [0] * slots  # host copy of cache.lengths (no device sync to read it)
        self._ids = itertools.count()
        self._step = make_step(model, self.cache, self.tokens, step_mode)
        self.step_mode = self._step.mode

    @property
    def free_slots(self) -> int:
        return sum(s is None for s in self.seqs)

    @property
    def num_active(self) -> int:
        return len(self.seqs) - self.free_slots

    # --- admitting requests ------------------------------------------------------------------

    def add(self, requests: Request | Sequence[Request]) -> list[int]:
        """Prefill requests into free slots (one left-padded forward); return their ids."""
        if isinstance(requests, Request):
            requests = [requests]
        free = [i for i, s in enumerate(self.seqs) if s is None]
        if len(requests) > len(free):
            raise ValueError(f"{len(requests)} requests but only {len(free)} free slots")
        prompts = [self._fit(r) for r in requests]
        self._prefill(free[: len(requests)], [p[:-1] for p in prompts])
        ids = []
        for slot, req, prompt in zip(free, requests, prompts):
            ids.append(next(self._ids))
            self.seqs[slot] = self._new_sequence(ids[-1], req, prompt)
            self.tokens[slot] = prompt[-1]
            self.active[slot] = 1
        return ids

    def _fit(self, req: Request) -> list[int]:
        """The prompt ids this request starts from, or an error under the ``error`` policy."""
        prompt, room = list(req.prompt_ids), self.cache.max_len
        if max(prompt) >= self.cfg.vocab_size or min(prompt) < 0:
            raise ValueError(
                f"prompt holds ids outside the vocabulary 0..{self.cfg.vocab_size - 1}"
            )
        if self.overflow == "error" and len(prompt) + req.max_new_tokens > room:
            raise ContextOverflowError(
                f"prompt of {len(prompt)} tokens + max_new_tokens {req.max_new_tokens} exceeds "
                f"the {room}-token context; shorten the prompt, lower max_new_tokens, or use "
                "overflow='slide'"
            )
        return prompt[-int(room * SLIDE_KEEP) :] if len(prompt) > room else prompt

    def _new_sequence(self, request_id: int, req: Request, prompt: list[int]) -> _Sequence:
        generator = None
        if req.seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(req.seed)
        history = None
        if req.sampling.uses_penalties:
            history = TokenHistory(1, self.cfg.vocab_size, self.device)
            history.add_prompt(0, prompt)
        stream = TextStream(self.tokenizer, req.stop)
        logprobs = [] if req.logprobs is not None else None
        return _Sequence(
            request_id, req, stream, generator, history, ids=list(prompt), logprobs=logprobs
        )

    @torch.no_grad()
    def _prefill(self, slots: list[int], contexts: list[list[int]]) -> None:
        """Run the cached part of each prompt (all but its last id) and load it into its slot."""
        for slot in slots:
            self._lengths[slot] = 0
            self.cache.lengths[slot] = 0
        todo = [(s, c) for s, c in zip(slots, contexts) if c]
        if not todo:
            return
        idx, mask = left_pad([c for _, c in todo], device=self.device)  # [n, T]
        tmp = KVCache.for_config(
            self.cfg, len(todo), idx.shape[1], device=self.device, dtype=self.cache.dtype
        )
        if len({len(c) for _, c in todo}) == 1:  # no padding: plain causal attention, no mask
            self.model.features(idx, kv_cache=tmp)
        else:
            self.model.features(
                idx, attention_mask=mask, kv_cache=tmp, position_ids=positions_from_mask(mask)
            )
        for row, (slot, ctx) in enumerate(todo):
            pad = idx.shape[1] - len(ctx)
            self.cache.load(slot, tmp.k[:, row, :, pad:], tmp.v[:, row, :, pad:])
            self._lengths[slot] = len(ctx)

    def cancel(self, request_id: int) -> Completion | None:
        """Stop a request now and free its slot; returns what it produced (None if unknown)."""
        for slot, seq in enumerate(self.seqs):
            if seq is not None and seq.request_id == request_id:
                seq.stream.finish()
                return self._release(slot, "cancelled")
        return None

    # --- decoding ----------------------------------------------------------------------------

    @torch.no_grad()
    def step(self) -> list[StepEvent]:
        """One token for every active request; finished requests leave their slot."""
        live = [i for i, s in enumerate(self.seqs) if s is not None]
        if not live:
            return []
        for slot in live:
            if self._lengths[slot] >= self.cache.max_len:
                self._slide(slot)
        view = max(self._lengths[s] for s in live) + 1
        # live slots all at the same length: no column to hide from them, so no mask (the rows
        # of free slots are computed but never read)
        full = all(self._lengths[s] == view - 1 for s in live)
        logits = self._step(view, full)  # [slots, vocab]
        next_ids = self._sample(logits, live)
        scored = self._logprobs(logits, live, next_ids)
        self.cache.lengths += self.active  # each live slot wrote one column
        events = []
        for slot in live:
            self._lengths[slot] += 1
            events.append(self._advance(slot, next_ids[slot], scored.get(slot)))
        return events

    def _logprobs(self, logits: Tensor, live: list[int], ids: list[int]) -> dict[int, TokenLogprob]:
        """Each sampled token's log-probability (and top alternatives) for the slots that ask."""
        want = [s for s in live if self.seqs[s].request.logprobs is not None]  # type: ignore[union-attr]
        if not want:
            return {}
        rows = torch.tensor(want, device=logits.device)
        logp = logits.index_select(0, rows).float().log_softmax(dim=-1)  # [n, V]
        k = max(self.seqs[s].request.logprobs for s in want)  # type: ignore[union-attr]
        top_v, top_i = logp.topk(k, dim=-1) if k else (logp[:, :0], logp[:, :0].long())
        chosen = logp.gather(1, torch.tensor([[ids[s]] for s in want], device=logits.device))
        chosen, top_v, top_i = chosen[:, 0].tolist(), top_v.tolist(), top_i.tolist()
        out = {}
        for row, slot in enumerate(want):
            n = self.seqs[slot].request.logprobs  # type: ignore[union-attr]
            top = tuple(zip(top_i[row][:n], top_v[row][:n]))
            out[slot] = TokenLogprob(ids[slot], chosen[row], top)
        return out

    def _sample(self, logits: Tensor, live: list[int]) -> list[int]:
        seqs = [self.seqs[s] for s in live]
        assert all(s is not None for s in seqs)
        plain = (s.request.sampling.greedy and not s.request.sampling.logit_bias for s in seqs)
        if all(plain) and all(s.history is None for s in seqs):
            ids = logits.argmax(dim=-1)  # the common fast case: one op for the batch
        else:
            ids = self.tokens.clone()
            for slot, seq in zip(live, seqs):
                row = sample_next_token(
                    logits[slot : slot + 1],
                    seq.request.sampling,
                    seq.generator,
                    history=seq.history,
                )
                ids[slot] = row[0]
        self.tokens.copy_(ids)  # in place: a captured CUDA graph reads this tensor
        return ids.tolist()

    def _advance(self, slot: int, token: int, logprob: TokenLogprob | None = None) -> StepEvent:
        seq = self.seqs[slot]
        assert seq is not None
        req = seq.request
        if seq.history is not None:
            seq.history.add_output(torch.tensor([token], device=self.device))
        if token == self.tokenizer.eot_id or token in req.stop_token_ids:
            text = seq.stream.finish()
            return StepEvent(seq.request_id, token, text, self._release(slot, "eot"))
        seq.output.append(token)
        seq.ids.append(token)
        if logprob is not None and seq.logprobs is not None:
            seq.logprobs.append(logprob)
        text = seq.stream.push([token])
        if seq.stream.stopped:
            return StepEvent(seq.request_id, token, text, self._release(slot, "stop"), logprob)
        if len(seq.output) >= req.max_new_tokens:
            text += seq.stream.finish()
            return StepEvent(seq.request_id, token, text, self._release(slot, "length"), logprob)
        return StepEvent(seq.request_id, token, text, None, logprob)

    def _release(self, slot: int, reason: str) -> Completion:
        seq = self.seqs[slot]
        assert seq is not None
        self.seqs[slot] = None
        self.active[slot] = 0
        prompt = seq.ids[: len(seq.ids) - len(seq.output)]
        return Completion(prompt, seq.output, seq.stream.text, reason, seq.logprobs)

    def _slide(self, slot: int) -> None:
        """The slot's cache is full: rebuild it from its most recent tokens (policy 'slide')."""
        if self.overflow != "slide":
            raise ContextOverflowError(f"slot {slot} filled its {self.cache.max_len}-token cache")
        seq = self.seqs[slot]
        assert seq is not None
        keep = max(1, int(self.cache.max_len * SLIDE_KEEP))
        self._prefill([slot], [seq.ids[-keep:-1]])


class Engine:
    """Model + tokenizer behind a text API: `generate` many prompts, `stream` one, or `batch`."""

    def __init__(self, model: nn.Module, tokenizer, *, step_mode: str = "auto") -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.step_mode = step_mode
        self._batch: DecodeBatch | None = None  # reused while its shape fits (keeps graphs)

    def encode(self, prompt: str | Sequence[int]) -> tuple[int, ...]:
        """Token ids of a prompt; an empty prompt starts from the end-of-text token."""
        ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        if not ids:
            if self.tokenizer.eot_id is None:
                raise ValueError("empty prompt and the tokenizer has no end-of-text token")
            ids = [self.tokenizer.eot_id]
        return tuple(ids)

    def batch(self, slots: int, *, max_len: int | None = None, overflow: str = "error"):
        """A `DecodeBatch` for step-level use (a server admitting and evicting requests)."""
        b = self._batch
        if (
            b is None
            or b.num_active
            or b.cache.slots != slots
            or b.cache.max_len != (max_len or self.model.cfg.context_length)
            or b.overflow != overflow
        ):
            b = DecodeBatch(
                self.model,
                self.tokenizer,
                slots,
                max_len=max_len,
                overflow=overflow,
                step_mode=self.step_mode,
            )
            self._batch = b
        return b

    def requests(
        self, prompts: Sequence[str | Sequence[int]], sampling: SamplingConfig, **kw
    ) -> list[Request]:
        seed = kw.pop("seed", None)
        return [
            Request(self.encode(p), sampling, seed=None if seed is None else seed + i, **kw)
            for i, p in enumerate(prompts)
        ]

    def _batch_for(self, reqs: list[Request], overflow: str) -> DecodeBatch:
        ctx = self.model.cfg.context_length
        need = max(len(r.prompt_ids) + r.max_new_tokens for r in reqs)
        max_len = min(ctx, -(-need // 64) * 64)  # whole blocks of 64, so a batch is reusable
        if overflow == "slide":
            max_len = ctx
        return self.batch(len(reqs), max_len=max_len, overflow=overflow)

    def generate(
        self,
        prompts: Sequence[str | Sequence[int]],
        sampling: SamplingConfig = DEFAULT_SAMPLING,
        max_new_tokens: int = 100,
        *,
        stop: Sequence[str] = (),
        stop_token_ids: Sequence[int] = (),
        seed: int | None = None,
        overflow: str = "error",
        logprobs: int | None = None,
    ) -> list[Completion]:
        """Complete every prompt (batched; each stops on its own). Row i is seeded seed + i.
        ``logprobs=k`` fills each Completion's ``logprobs`` (the token's and k alternatives)."""
        if isinstance(prompts, str):
            raise TypeError("prompts must be a list of prompts; wrap a single one in [...]")
        reqs = self.requests(
            prompts,
            sampling,
            max_new_tokens=max_new_tokens,
            stop=tuple(stop),
            stop_token_ids=tuple(stop_token_ids),
            seed=seed,
            logprobs=logprobs,
        )
        batch = self._batch_for(reqs, overflow)
        order = {rid: i for i, rid in enumerate(batch.add(reqs))}
        done: list[Completion | None] = [None] * len(reqs)
        while batch.num_active:
            for event in batch.step():
                if event.completion is not None:
                    done[order[event.request_id]] = event.completion
        assert all(c is not None for c in done)
        return done  # type: ignore[return-value]

    def stream(
        self,
        prompt: str | Sequence[int],
        sampling: SamplingConfig = DEFAULT_SAMPLING,
        max_new_tokens: int = 100,
        *,
        stop: Sequence[str] = (),
        stop_token_ids: Sequence[int] = (),
        seed: int | None = None,
        overflow: str = "error",
    ) -> Iterator[str]:
        """Text pieces of one completion as they are decoded (never a split character)."""
        (req,) = self.requests(
            [prompt],
            sampling,
            max_new_tokens=max_new_tokens,
            stop=tuple(stop),
            stop_token_ids=tuple(stop_token_ids),
            seed=seed,
        )
        batch = self._batch_for([req], overflow)
        (rid,) = batch.add(req)
        try:
            while batch.num_active:
                for event in batch.step():
                    if event.text:
                        yield event.text
        finally:  # the consumer stopped early: free the slot
            batch.cancel(rid)
