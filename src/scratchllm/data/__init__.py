"""Text to training batches: sources, sliding windows, pretokenized shards, loaders.

Import from the submodules (``scratchllm.data.windows``, ``.loaders``, ``.sources``, ``.encode``,
``.shards``, ``.batching``); this package re-exports nothing so that importing it stays cheap.
"""
