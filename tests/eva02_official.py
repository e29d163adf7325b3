"""The official EVA-02 rotary embedding, written out for the tests that
compare eva_mm's EVA-02 models with the official forward passes."""
import re
from typing import Dict

import torch
import torch.nn.functional as F


def official_rope(head_dim: int, side: int,
                  pt_seq_len: int = 16) -> Dict[str, torch.Tensor]:
    """VisionRotaryEmbeddingFast(dim=head_dim // 2, pt_seq_len=16,
    ft_seq_len=side)'s persistent buffers (EVA-02/det/detectron2/modeling/
    backbone/utils.py:309-348, EVA-02/seg/backbone/eva2.py:111-146): 'lang'
    frequencies, positions scaled to the 16 x 16 pre-training grid, each
    frequency repeated for an interleaved pair, (y, x) halves; (side * side,
    head_dim) tables."""
    dim = head_dim // 2
    freqs = 1. / (10000**(torch.arange(0, dim, 2)[:dim // 2].float() / dim))
    t = torch.arange(side) / side * pt_seq_len
    freqs = torch.einsum('i,f->if', t, freqs).repeat_interleave(2, dim=-1)
    grid = torch.cat([
        freqs[:, None, :].expand(side, side, -1),
        freqs[None, :, :].expand(side, side, -1)
    ], dim=-1).reshape(side * side, -1)
    return dict(freqs_cos=grid.cos(), freqs_sin=grid.sin())


def apply_rope(x: torch.Tensor, cos: torch.Tensor,
               sin: torch.Tensor) -> torch.Tensor:
    """The official forward ``t * freqs_cos + rotate_half(t) * freqs_sin``,
    rotate_half (utils.py:250-254) mapping (x0, x1, x2, x3, ...) to (-x1,
    x0, -x3, x2, ...)."""
    pairs = x.unflatten(-1, (-1, 2))
    rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)
    return x * cos + rotated * sin


def fused_value_sums(source: Dict[str, torch.Tensor]) -> list:
    """Sorted sums of the source tensors, each block's q, k and v
    projections counted as one tensor (fused into attn.qkv)."""
    sums: Dict[str, float] = {}
    for key, value in source.items():
        key = re.sub(r'attn\.[qkv]_proj\.', 'attn.qkv.', key)
        sums[key] = sums.get(key, 0.) + float(value.double().sum())
    return sorted(sums.values())


def official_attention(x: torch.Tensor, p: Dict[str, torch.Tensor],
                       prefix: str, num_heads: int,
                       num_prefix_tokens: int = 0) -> torch.Tensor:
    """The official EVA-02 Attention.forward without xformers (EVA-02/det/
    .../backbone/vit.py:103-136, EVA-02/seg/backbone/eva2.py:287-347):
    separate q/k/v projections (no key bias), RoPE from the block's
    ``attn.rope`` buffers on all tokens but the first ``num_prefix_tokens``
    (the seg model's cls token), softmax attention, output projection.

    Args:
        x: (B, N, C) tokens, after norm1.
        p: The source state dict.
        prefix: The block's prefix, e.g. ``'backbone.net.blocks.0.'``.
        num_heads: Attention heads.
        num_prefix_tokens: Leading tokens RoPE leaves alone.

    Returns:
        (B, N, C).
    """
    b, n, c = x.shape

    def heads(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(b, n, num_heads, -1).permute(0, 2, 1, 3)

    def rope(t: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            t[:, :, :num_prefix_tokens],
            apply_rope(t[:, :, num_prefix_tokens:],
                       p[prefix + 'attn.rope.freqs_cos'],
                       p[prefix + 'attn.rope.freqs_sin'])
        ], dim=2)

    q = rope(heads(F.linear(x, p[prefix + 'attn.q_proj.weight'],
                            p[prefix + 'attn.q_bias'])))
    k = rope(heads(F.linear(x, p[prefix + 'attn.k_proj.weight'])))
    v = heads(F.linear(x, p[prefix + 'attn.v_proj.weight'],
                       p[prefix + 'attn.v_bias']))
    attn = (q * (c // num_heads)**-0.5) @ k.transpose(-2, -1)
    out = (attn.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c)
    return F.linear(out, p[prefix + 'attn.proj.weight'],
                    p[prefix + 'attn.proj.bias'])


def official_swiglu_branch(x: torch.Tensor, p: Dict[str, torch.Tensor],
                           prefix: str) -> torch.Tensor:
    """The MLP branch of an official EVA-02 block: w3(ffn_ln(silu(w1(y)) *
    w2(y))) on y = norm2(x) (vit.py:42-66, 282; LayerNorms eps 1e-6)."""
    def ln(t: torch.Tensor, name: str) -> torch.Tensor:
        return F.layer_norm(t, t.shape[-1:], p[prefix + name + '.weight'],
                            p[prefix + name + '.bias'], eps=1e-6)

    def linear(t: torch.Tensor, name: str) -> torch.Tensor:
        return F.linear(t, p[prefix + name + '.weight'],
                        p[prefix + name + '.bias'])

    y = ln(x, 'norm2')
    hidden = F.silu(linear(y, 'mlp.w1')) * linear(y, 'mlp.w2')
    return linear(ln(hidden, 'mlp.ffn_ln'), 'mlp.w3')
