"""Interoperability with Hugging Face checkpoints and tokenizers (the only place HF names live).

- `load_hf(path_or_hub_id)`: GPT-2 / BERT / Llama / Qwen2 checkpoint -> our model (lean, mmap).
- `save_hf(model, dir)`: our model -> config.json + model.safetensors that transformers loads.
- `convert_to_run` / `export_run`: the same for run directories (`scratchllm convert/export`).
- `save_hf_tokenizer` / `load_hf_tokenizer`: our BPE <-> tokenizer.json, vocab.json + merges.txt,
  tokenizer.tiktoken.
"""

from scratchllm.interop.hf_convert import from_transformers
from scratchllm.interop.hf_files import HFCheckpoint, load_hf, save_hf
from scratchllm.interop.hf_tokenizer import load_hf_tokenizer, save_hf_tokenizer
from scratchllm.interop.runs import convert_to_run, export_run, load_any_run

__all__ = [
    "HFCheckpoint",
    "convert_to_run",
    "export_run",
    "from_transformers",
    "load_any_run",
    "load_hf",
    "load_hf_tokenizer",
    "save_hf",
    "save_hf_tokenizer",
]
