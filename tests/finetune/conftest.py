"""Fixtures shared by the fine-tuning tests."""

from __future__ import annotations

import os
import signal

import pytest

from scratchllm.train.loop import Trainer


@pytest.fixture
def sigterm_at(monkeypatch):
    """``sigterm_at(n)``: the process sends itself SIGTERM right after optimizer step ``n``, as a
    scheduler stopping the job would; only the first Trainer run in the test is signalled."""

    def arm(step: int) -> None:
        original = Trainer.train_step
        fired = []

        def train_step(self, batches):
            loss = original(self, batches)
            if self.step == step and not fired:
                fired.append(step)
                os.kill(os.getpid(), signal.SIGTERM)
            return loss

        monkeypatch.setattr(Trainer, "train_step", train_step)

    return arm
