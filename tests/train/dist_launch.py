"""Starting worker ranks as torchrun does: this process hosts their rendezvous store.

The store listens on a port the system picks (port 0) and keeps it while the ranks run, and every
rank joins it as a client (TORCHELASTIC_USE_AGENT_STORE, torchrun's own switch). Finding a free
port here, closing it and telling rank 0 to bind it seconds later (once torch is imported) could
lose the port to another process in between: rank 0 would fail with "address already in use".
"""

from __future__ import annotations

import os
import subprocess
from datetime import timedelta

from torch.distributed import TCPStore


def start_ranks(world_size: int, args: list[str]) -> tuple[list[subprocess.Popen], object]:
    """``world_size`` processes running ``args`` (stderr piped), and the store they rendezvous at,
    which the caller keeps referenced until they are done (None for a single process)."""
    store, common = None, {**os.environ, "WORLD_SIZE": str(world_size)}
    if world_size > 1:
        store = TCPStore(
            "127.0.0.1",
            0,
            world_size,
            is_master=True,
            timeout=timedelta(seconds=300),
            wait_for_workers=False,
        )
        common.update(
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(store.port),
            TORCHELASTIC_USE_AGENT_STORE="True",
        )
    procs = [
        subprocess.Popen(
            args,
            env={**common, "RANK": str(rank), "LOCAL_RANK": str(rank)},
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(world_size)
    ]
    return procs, store
