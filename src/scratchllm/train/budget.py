"""Fitting a training run to a wall-time budget (``TrainConfig.max_seconds``).

With max_seconds, the speed of BUDGET_PROBE_STEPS steps (after BUDGET_SKIP_STEPS, which pay
one-time costs) decides how many fit: when fewer than max_steps do, the schedule (warm-up, then
cosine decay) is fitted to end within the budget, so it still decays to its floor. It is fitted
again as the run goes on, and the end moved if it is off by more than BUDGET_REFIT_TOLERANCE.
The clock itself (stopping a run that goes over) is the training loop's.
"""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING

from scratchllm.train.distributed import min_across_ranks

if TYPE_CHECKING:
    from scratchllm.train.loop import Trainer

BUDGET_SKIP_STEPS = 3
BUDGET_PROBE_STEPS = 10
BUDGET_REFIT_TOLERANCE = 0.1


def steps_within(trainer: Trainer, seconds: float, step_seconds: float) -> int:
    """Optimizer steps that fit in ``seconds`` at ``step_seconds`` each, leaving room for the
    evaluations (each ``eval_batches`` forward passes, about a third of a step each) and a
    tenth of the budget to spare."""
    cfg = trainer.cfg
    eval_share = cfg.eval_batches / (3 * cfg.eval_interval) if trainer.val_batches else 0.0
    return int(0.9 * seconds / (step_seconds * (1 + eval_share)))


class TimeBudget:
    """Fits ``cfg.max_steps`` (and so the end of the schedule) to ``cfg.max_seconds``.

    First after timing the probe steps, then again each time a quarter of what was left has
    passed (in steps or in training time, whichever comes first), at the speed of the last
    ``BUDGET_PROBE_STEPS`` steps: the probe may have run on a busier (or quieter) machine than the
    rest. A later fit moves the end only if it is off by more than a tenth; none goes past the
    ``max_steps`` asked for. Times are training seconds (evaluation and saving left out:
    ``steps_within`` counts evaluations separately). Under torchrun the ranks agree on when to
    fit (the caller combines ``due`` across ranks) and each fit is the smallest over the ranks,
    so that every rank stops at the same step."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.asked = trainer.cfg.max_steps
        self.fit_at = trainer.step + BUDGET_SKIP_STEPS + BUDGET_PROBE_STEPS  # a step
        self.fit_after = math.inf  # training seconds: the next fit comes by then at the latest
        self.fits = 0
        self.done = False  # too few steps left for another fit to tell anything
        self.per_step = 0.0  # seconds, as timed for the last fit
        self.last: int | None = None  # the step of the probe's start or of the last fit
        self.recent: deque[tuple[int, float]] = deque(maxlen=BUDGET_PROBE_STEPS + 1)

    def due(self, train_seconds: float) -> bool:
        """Whether this rank would fit now (called after each step)."""
        step = self.trainer.step
        if self.fits == 0 and step == self.fit_at - BUDGET_PROBE_STEPS:
            self.last = step
        if self.last is not None:
            self.recent.append((step, train_seconds))  # (step, training seconds after it)
        if self.done or self.last is None or step <= self.last:
            return False
        return step >= self.fit_at or train_seconds >= self.fit_after

    def fit(self, train_seconds: float, elapsed: float) -> str | None:
        """Fit ``cfg.max_steps`` to the time left (collective under torchrun); a message when it
        changed."""
        t, cfg = self.trainer, self.trainer.cfg
        since = self.recent[0]  # the last BUDGET_PROBE_STEPS steps (the probe, the first time)
        per_step = (train_seconds - since[1]) / (t.step - since[0])
        left = cfg.max_seconds - elapsed
        steps = min(t.step + steps_within(t, left, per_step), self.asked)
        steps = max(min_across_ranks(steps, t.dist, t.device), t.step)
        self.fits += 1
        first, before = self.fits == 1, self.per_step
        self.per_step, self.last = per_step, t.step
        self.fit_at = t.step + max(BUDGET_PROBE_STEPS, (steps - t.step) // 4)
        self.fit_after = train_seconds + left / 4
        self.done = steps - t.step <= BUDGET_PROBE_STEPS
        off = abs(steps - cfg.max_steps) > BUDGET_REFIT_TOLERANCE * cfg.max_steps
        if (first and steps >= cfg.max_steps) or (not first and not off):
            return None
        cfg.max_steps = steps
        # a warm-up of at most a tenth of the (new) run, so that it decays
        cfg.warmup_steps = min(cfg.warmup_steps, max(steps // 10, t.step))
        if first:
            return (
                f"time budget: about {steps} steps fit in max_seconds={cfg.max_seconds:g}; "
                "the learning-rate schedule now ends there"
            )
        return (
            f"time budget: steps now take {per_step:.3g} s, not {before:.3g} s as last timed; "
            f"about {steps} steps fit, and the learning-rate schedule now ends there"
        )
