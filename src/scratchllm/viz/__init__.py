"""Pictures of what a model does: tokens, attention, embeddings, next-token odds, training.

Every function writes a PNG and returns its path; matplotlib runs headless (Agg).
"""

from scratchllm.viz._figure import token_label
from scratchllm.viz.attention import (
    attention_weights,
    attention_weights_of,
    plot_attention,
    plot_attention_matrix,
)
from scratchllm.viz.curves import plot_training, run_metrics
from scratchllm.viz.embeddings import pca_2d, plot_embeddings
from scratchllm.viz.next_token import next_token_probs, plot_next_token
from scratchllm.viz.tokens import plot_tokens

__all__ = [
    "attention_weights",
    "attention_weights_of",
    "next_token_probs",
    "pca_2d",
    "plot_attention",
    "plot_attention_matrix",
    "plot_embeddings",
    "plot_next_token",
    "plot_tokens",
    "plot_training",
    "run_metrics",
    "token_label",
]
