"""scratchllm: GPT- and BERT-style language models from first principles."""

__version__ = "0.1.0"
