"""Continuous batching for the server: one decode thread, many requests, one `DecodeBatch`.

The model runs in a single background thread that owns a `DecodeBatch`. Between any two decode
steps it (1) drops requests that were cancelled (client gone) or ran past their deadline,
(2) admits waiting requests into free slots (one left-padded prefill for all of them), and
(3) runs one step for every active request and hands each its new text. Requests therefore join
and leave a running batch instead of waiting for it to drain, and a cancellation takes effect
before the next step. Events reach the asyncio side through ``loop.call_soon_threadsafe``.

The waiting queue is bounded (`QueueFull` -> 429 upstream), so load past capacity is refused
at once rather than piling up.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from scratchllm.generation import Completion, DecodeBatch, Request, TokenLogprob

FINISH_REASONS = {"eot": "stop", "stop": "stop", "length": "length", "timeout": "length"}


class QueueFull(Exception):
    """More choices than the waiting queue has room for."""


class ShuttingDown(Exception):
    """The scheduler no longer accepts work."""


@dataclass
class Event:
    index: int  # the choice (0..choices-1) of the ticket this event belongs to
    text: str = ""  # new text ('' on a finishing event that released nothing)
    completion: Completion | None = None  # set when the choice is finished
    finish_reason: str | None = None  # OpenAI's: "stop" | "length" (with completion)
    error: str | None = None  # the choice failed (queue timeout, shutdown, internal error)
    unavailable: bool = False  # the error is the server's state (timeout, shutdown): retry later
    logprobs: tuple[TokenLogprob, ...] = ()  # of the tokens behind this event, when requested


@dataclass
class Job:
    """One choice of one HTTP request."""

    index: int
    request: Request
    ticket: Ticket
    request_id: int | None = None  # the DecodeBatch's id once admitted
    done: bool = False


@dataclass
class Ticket:
    """What an HTTP handler holds: its choices' events arrive on ``events``."""

    loop: asyncio.AbstractEventLoop
    deadline: float  # time.monotonic() after which the choices are cut off
    events: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)
    jobs: list[Job] = field(default_factory=list)
    cancelled: bool = False
    serial: int = 0

    def emit(self, event: Event) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            pass


class Scheduler:
    """See the module docstring. `submit` and `cancel` may be called from any thread."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        *,
        slots: int,
        max_queue: int,
        step_mode: str = "auto",
    ) -> None:
        self.batch = DecodeBatch(model.eval(), tokenizer, slots, step_mode=step_mode)
        self.max_queue = max_queue
        self._cond = threading.Condition()
        self._waiting: deque[Job] = deque()
        self._active: dict[int, Job] = {}
        self._stopping = False
        self._serial = itertools.count()
        self._thread = threading.Thread(target=self._run, name="scratchllm-decode", daemon=True)
        self.steps = 0  # decode steps run (for tests and /health)
        self.peak_batch = 0  # most requests decoded together in one step
        self.cancelled = 0  # choices dropped because their client went away

    # --- the asyncio side ---------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Refuse new work, fail what is left, and join the decode thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def submit(
        self, requests: list[Request], deadline: float, loop: asyncio.AbstractEventLoop
    ) -> Ticket:
        ticket = Ticket(loop, deadline, serial=next(self._serial))
        ticket.jobs = [Job(i, r, ticket) for i, r in enumerate(requests)]
        with self._cond:
            if self._stopping:
                raise ShuttingDown("the server is shutting down")
            room = self.max_queue + self.batch.free_slots  # slots now + the queue behind them
            if len(self._waiting) + len(requests) > room:
                raise QueueFull(f"{len(self._waiting)} requests are waiting for a slot")
            self._waiting.extend(ticket.jobs)
            self._cond.notify_all()
        return ticket

    def cancel(self, ticket: Ticket) -> None:
        """The client is gone: its choices leave the batch before the next step."""
        with self._cond:
            ticket.cancelled = True
            self._cond.notify_all()

    @property
    def load(self) -> dict[str, int]:
        with self._cond:
            return {
                "active": len(self._active),
                "waiting": len(self._waiting),
                "slots": len(self.batch.seqs),
            }

    # --- the decode thread --------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self._waiting and not self._active:
                    self._cond.wait()
                if self._stopping:
                    break
                admit = self._take_waiting()
            self._evict()
            if admit:
                self._admit(admit)
            if self._active:
                self._step()
        self._fail_all("the server is shutting down", unavailable=True)

    def _take_waiting(self) -> list[Job]:
        """Pop the jobs that get a slot now; expire or drop the ones that cannot (lock held)."""
        now, keep, admit = time.monotonic(), deque(), []
        free = self.batch.free_slots
        while self._waiting:
            job = self._waiting.popleft()
            if job.ticket.cancelled:
                self.cancelled += 1
                job.done = True
            elif now > job.ticket.deadline:
                self._finish(
                    job, error="timed out waiting for a free decode slot", unavailable=True
                )
            elif len(admit) < free:
                admit.append(job)
            else:
                keep.append(job)
        self._waiting = keep
        return admit

    def _evict(self) -> None:
        now = time.monotonic()
        for rid, job in list(self._active.items()):
            if job.ticket.cancelled or now > job.ticket.deadline:
                completion = self.batch.cancel(rid)
                del self._active[rid]
                self.cancelled += job.ticket.cancelled
                if not job.ticket.cancelled and completion is not None:
                    self._finish(job, completion, "timeout")
                job.done = True

    def _admit(self, jobs: list[Job]) -> None:
        try:
            ids = self.batch.add([j.request for j in jobs])
        except Exception:  # noqa: BLE001 - find the one at fault; admit the others
            ids = []
            for job in list(jobs):
                try:
                    ids += self.batch.add(job.request)
                except Exception as exc:  # noqa: BLE001
                    jobs.remove(job)
                    self._finish(job, error=f"could not start the request: {exc}")
        for rid, job in zip(ids, jobs):
            job.request_id = rid
            self._active[rid] = job

    def _step(self) -> None:
        self.peak_batch = max(self.peak_batch, len(self._active))
        try:
            events = self.batch.step()
        except Exception as exc:  # noqa: BLE001 - fail this batch, keep serving
            self._fail_all(f"decoding failed: {exc}", waiting=False)
            return
        self.steps += 1
        for ev in events:
            job = self._active.get(ev.request_id)
            if job is None:
                continue
            scored = (ev.logprob,) if ev.logprob is not None else ()
            if ev.completion is not None:
                del self._active[ev.request_id]
                self._finish(
                    job, ev.completion, ev.completion.finish_reason, ev.text, scored=scored
                )
            elif ev.text or scored:
                job.ticket.emit(Event(job.index, ev.text, logprobs=scored))

    def _finish(
        self,
        job: Job,
        completion: Completion | None = None,
        reason: str | None = None,
        text: str = "",
        error: str | None = None,
        unavailable: bool = False,
        scored: tuple[TokenLogprob, ...] = (),
    ) -> None:
        job.done = True
        reason = FINISH_REASONS.get(reason or "", None)
        job.ticket.emit(Event(job.index, text, completion, reason, error, unavailable, scored))

    def _fail_all(self, message: str, *, waiting: bool = True, unavailable: bool = False) -> None:
        for rid, job in list(self._active.items()):
            self.batch.cancel(rid)
            self._finish(job, error=message, unavailable=unavailable)
        self._active.clear()
        if waiting:
            with self._cond:
                jobs, self._waiting = list(self._waiting), deque()
            for job in jobs:
                self._finish(job, error=message, unavailable=unavailable)
