"""EVA self-attention with the relative-position options of the dense tasks."""
from dataclasses import dataclass, field
from typing import Callable, Dict, Hashable, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import apply_rot_embed_cat, gen_relative_position_index

from .pos_embed import resize_rel_pos_bias_table
from .rel_pos_attention import (decomposed_rel_pos_attention,
                                decomposed_rel_pos_logits,
                                key_grid_indicators)

# Up to this many 16-bit logits per call the CPU computes attention by the
# formula itself, keeping the probabilities (32 MiB at most), as the
# official code does at every size. PyTorch's fused CPU kernel is slower in
# bf16 than the formula: forward + backward of 12 heads of 1025 tokens
# (ViT-B's global attention at 512 px, 12.6M logits) 0.092 s against
# 0.068 s, of 25 windows of 196 tokens 0.158 s against 0.051 s; in fp32 it
# is the faster by 1.6x (one thread, tools/analysis/
# rel_pos_attention_benchmark.py --plain, docs/benchmark.md).
_FORMULA_MAX_LOGITS = 1 << 24


def attention_formula_is_faster(q: torch.Tensor, k: torch.Tensor,
                                dropout_p: float) -> bool:
    """Whether :func:`scaled_dot_product_attention` computes this call by
    the formula rather than PyTorch's fused kernel (the constant above)."""
    logits = q.shape[0] * q.shape[1] * q.shape[2] * k.shape[2]
    return (q.device.type == 'cpu' and not dropout_p
            and q.dtype in (torch.float16, torch.bfloat16)
            and logits <= _FORMULA_MAX_LOGITS)


def scaled_dot_product_attention(q: torch.Tensor,
                                 k: torch.Tensor,
                                 v: torch.Tensor,
                                 attn_mask: Optional[torch.Tensor] = None,
                                 dropout_p: float = 0.,
                                 formula: Optional[bool] = None
                                 ) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + attn_mask) v on the faster of two exact
    paths: ``F.scaled_dot_product_attention`` (its fused kernels keep no
    N x N tensor) or, for small 16-bit calls on the CPU, the formula.

    Args:
        q: Queries (B, heads, N, d).
        k: Keys (B, heads, M, d).
        v: Values (B, heads, M, d_v).
        attn_mask: Additive bias broadcastable to (B, heads, N, M), or None.
        dropout_p: Dropout on the attention weights (the fused path).
        formula: Force the formula (True) or the fused call (False); None
            chooses (:func:`attention_formula_is_faster`).

    Returns:
        Tensor (B, heads, N, d_v) in the dtype of ``v``.
    """
    if formula is None:
        formula = attention_formula_is_faster(q, k, dropout_p)
    if not formula:
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
    logits = torch.matmul(q * q.shape[-1]**-0.5, k.transpose(-2, -1))
    if attn_mask is not None:
        logits = logits + attn_mask
    # The CPU's softmax kernel computes 16-bit input in fp32 and rounds
    # once; an fp32 softmax output would be 3x slower forward and backward.
    return torch.matmul(logits.softmax(dim=-1).to(v.dtype), v)


@dataclass
class TokenPositions:
    """Where the tokens of an attention call lie: what every position scheme
    reads.

    One object per forward (and per window size), passed by keyword through
    the blocks to attention, so that a new scheme reads what it needs
    without another positional argument.

    Args:
        grid: The patch grid of the tokens after the extra (cls) ones:
            (H, W) for images, (T, H, W) for video.
        rope: Rotary embedding (H * W, 2 * head_dim) of the positions one
            attention call sees (sin and cos concatenated as timm's
            ``RotaryEmbeddingCat`` builds them), or None.
        shared: Tensors that depend only on shapes (BEiT's index, the keys'
            grid indicators), built once per forward and shared by every
            block through :meth:`memo`.
    """

    grid: Tuple[int, ...]
    rope: Optional[torch.Tensor] = None
    shared: Dict[Hashable, torch.Tensor] = field(default_factory=dict)

    @property
    def hw(self) -> Tuple[int, int]:
        """The spatial (H, W) of the grid."""
        return tuple(self.grid[-2:])

    def memo(self, key: Hashable,
             build: Callable[[], torch.Tensor]) -> torch.Tensor:
        """``build()``, once per key for everything sharing ``shared``."""
        if key not in self.shared:
            self.shared[key] = build()
        return self.shared[key]

    def window(self, size: int) -> 'TokenPositions':
        """The positions one window attention call sees (same RoPE: the
        caller gives a window block the RoPE of its window)."""
        return TokenPositions((size, size), self.rope, self.shared)


class EVAAttention(nn.Module):
    """Multi-head self-attention of EVA.

    The ``qkv`` projection has no bias; a learned ``q_bias`` and ``v_bias`` are
    added and the key bias is fixed at zero, as in BEiT and EVA. Attention
    never builds an N x N tensor per batch element: it runs through
    :func:`scaled_dot_product_attention` (PyTorch's fused kernels, or the
    formula where that is faster) with no mask (RoPE, none) or with
    BEiT's per-head bias (1, heads, N, N) broadcast over the batch, and
    ViTDet's decomposed term goes through the exact
    :func:`~eva_mm.models.layers.rel_pos_attention.decomposed_rel_pos_attention`.

    Args:
        dim: Token dimension.
        num_heads: Number of heads.
        qkv_bias: Whether to learn ``q_bias`` and ``v_bias``.
        attn_drop: Dropout on attention weights.
        proj_drop: Dropout after the output projection.
        rel_pos: ``None``, ``'decomposed'`` (ViTDet: per-axis tables added to
            the logits, zero-initialised) or ``'bias'`` (BEiT: a learned bias
            per relative offset and head).
        rel_pos_size: The (H, W) the relative tables are sized for; other
            sizes are interpolated at run time.
        num_extra_tokens: Leading non-patch tokens (the cls token) in the
            sequence; they get no relative position term from ``'decomposed'``
            and no rotary embedding.
        norm_layer: Builds the inner LayerNorm ``norm`` over all heads'
            outputs before ``proj`` (EVA-CLIP's ``inner_attn_ln``, timm's
            ``scale_attn_inner``); ``None`` for none.
        fp32_attention: Under mixed precision, compute the attention
            (q.k, softmax and the weighted sum) in fp32, as EVA-01's video
            model does with ``qk_float`` (EVA-01/video/models/beit.py:135,
            183-186, where the probabilities return to fp16 before the sum
            with v; here the sum stays in fp32, so that the fused kernel
            runs).
    """

    def __init__(self,
                 dim: int,
                 num_heads: int,
                 qkv_bias: bool = True,
                 attn_drop: float = 0.,
                 proj_drop: float = 0.,
                 rel_pos: Optional[str] = None,
                 rel_pos_size: Optional[Tuple[int, int]] = None,
                 num_extra_tokens: int = 0,
                 norm_layer: Optional[Callable[[int], nn.Module]] = None,
                 fp32_attention: bool = False) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(
                f'dim {dim} is not divisible by num_heads {num_heads}.')
        if rel_pos not in (None, 'decomposed', 'bias'):
            raise ValueError(
                f"rel_pos must be None, 'decomposed' or 'bias', got "
                f'{rel_pos!r}.')
        if rel_pos is not None and rel_pos_size is None:
            raise ValueError('rel_pos needs rel_pos_size.')
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.attn_drop = attn_drop
        self.rel_pos = rel_pos
        self.rel_pos_size = tuple(rel_pos_size) if rel_pos_size else None
        self.num_extra_tokens = num_extra_tokens
        self.fp32_attention = fp32_attention

        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = self.v_bias = None
        self.norm = norm_layer(dim) if norm_layer is not None else None
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

        if rel_pos == 'decomposed':
            h, w = self.rel_pos_size
            self.rel_pos_h = nn.Parameter(
                torch.zeros(2 * h - 1, self.head_dim))
            self.rel_pos_w = nn.Parameter(
                torch.zeros(2 * w - 1, self.head_dim))
        elif rel_pos == 'bias':
            h, w = self.rel_pos_size
            self.relative_position_bias_table = nn.Parameter(
                torch.zeros((2 * h - 1) * (2 * w - 1) + 3, num_heads))

    def _qkv(self, x: torch.Tensor) -> torch.Tensor:
        bias = None
        if self.q_bias is not None:
            bias = torch.cat(
                [self.q_bias,
                 torch.zeros_like(self.v_bias), self.v_bias])
        return F.linear(x, self.qkv.weight, bias)

    def _table_bias(self, positions: TokenPositions) -> torch.Tensor:
        """BEiT's bias (1, heads, N, N): one per block (its own table), the
        index once per shape and forward, broadcast over the batch."""
        hw = positions.hw
        table = resize_rel_pos_bias_table(self.relative_position_bias_table,
                                          self.rel_pos_size, hw)
        with_cls = self.num_extra_tokens > 0
        index = positions.memo(
            ('beit_index', hw, with_cls, table.device),
            lambda: gen_relative_position_index(
                hw, class_token=with_cls, device=table.device))
        return table[index].permute(2, 0, 1).unsqueeze(0)

    def _decomposed_attention(self, q: torch.Tensor, k: torch.Tensor,
                              v: torch.Tensor,
                              positions: TokenPositions) -> torch.Tensor:
        hw, extra = positions.hw, self.num_extra_tokens
        rel_h, rel_w = decomposed_rel_pos_logits(q, self.rel_pos_h,
                                                 self.rel_pos_w, hw, extra)
        dropout = self.attn_drop if self.training else 0.
        indicators = None
        if q.device.type != 'cpu' or dropout:  # the fold reads them
            indicators = positions.memo(
                ('key_grid_indicators', hw, extra, q.dtype, q.device),
                lambda: key_grid_indicators(*hw, extra, q.dtype, q.device))
        return decomposed_rel_pos_attention(
            q, k, v, rel_h, rel_w, self.scale, indicators=indicators,
            num_extra_tokens=extra, dropout_p=dropout)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                positions: TokenPositions) -> torch.Tensor:
        if self.rel_pos == 'decomposed':
            return self._decomposed_attention(q, k, v, positions)
        bias = None
        if self.rel_pos == 'bias':
            bias = self._table_bias(positions).to(q.dtype)
        return scaled_dot_product_attention(
            q, k, v, attn_mask=bias,
            dropout_p=self.attn_drop if self.training else 0.)

    def _rotate(self, t: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
        # RoPE on the patch tokens only, never on the cls token
        # (EVA-02/asuka/modeling_finetune.py:213-220).
        extra = self.num_extra_tokens
        rotated = apply_rot_embed_cat(t[:, :, extra:], rope)
        if extra:
            rotated = torch.cat([t[:, :, :extra], rotated], dim=2)
        return rotated

    def forward(self, x: torch.Tensor, *,
                positions: TokenPositions) -> torch.Tensor:
        """Attend over a token sequence.

        Args:
            x: Tokens of shape (B, num_extra_tokens + H * W, C).
            positions: Their grid (the spatial (H, W) is what the relative
                terms read) and RoPE.

        Returns:
            Tensor of the same shape as ``x``.
        """
        b, n, c = x.shape
        qkv = self._qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        if positions.rope is not None:
            q, k = (self._rotate(q, positions.rope),
                    self._rotate(k, positions.rope))
        if self.fp32_attention:
            # Autocast would cast the fp32 inputs back down.
            with torch.autocast(q.device.type, enabled=False):
                x = self._attend(q.float(), k.float(), v.float(), positions)
        else:
            x = self._attend(q, k, v, positions)
        x = x.to(qkv.dtype).transpose(1, 2).reshape(b, n, c)
        if self.norm is not None:
            x = self.norm(x)
        return self.proj_drop(self.proj(x))
