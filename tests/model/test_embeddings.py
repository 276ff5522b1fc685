import math

import torch

from scratchllm.model.embeddings import apply_rotary_emb, rope_cos_sin, sinusoidal_table
from scratchllm.model.norms import RMSNorm


def test_sinusoidal_table_follows_the_formula():
    table = sinusoidal_table(torch.arange(5), 8)  # [5, 8]
    pos, i = 3, 2  # feature pair (2i, 2i+1)
    angle = pos / 10000 ** (2 * i / 8)
    assert math.isclose(table[pos, 2 * i].item(), math.sin(angle), abs_tol=1e-6)
    assert math.isclose(table[pos, 2 * i + 1].item(), math.cos(angle), abs_tol=1e-6)
    per_row = sinusoidal_table(torch.tensor([[0, 1], [3, 4]]), 8)  # [2, 2, 8]
    torch.testing.assert_close(per_row[1], table[3:5])


def test_rope_scores_depend_only_on_relative_position():
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    cos, sin = rope_cos_sin(torch.arange(20), 8, 10000.0, torch.float32)

    def score(m: int, n: int) -> float:
        qm = apply_rotary_emb(q, cos[m : m + 1], sin[m : m + 1])
        kn = apply_rotary_emb(k, cos[n : n + 1], sin[n : n + 1])
        return (qm * kn).sum().item()

    assert math.isclose(score(5, 2), score(15, 12), abs_tol=1e-4)
    rotated = apply_rotary_emb(q, cos[7:8], sin[7:8])
    assert math.isclose(rotated.norm().item(), q.norm().item(), rel_tol=1e-5)  # a rotation


def test_rmsnorm_formula():
    x = torch.randn(2, 3, 8)
    norm = RMSNorm(8, eps=1e-6)
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(norm(x), expected, atol=1e-6, rtol=0)
