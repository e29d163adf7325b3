"""EVA self-attention with the relative-position options of the dense tasks."""
from typing import Callable, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import apply_rot_embed_cat

from .pos_embed import resize_rel_pos, resize_rel_pos_bias_table


def _decomposed_rel_pos(table: torch.Tensor, size: int) -> torch.Tensor:
    """Look up a ViTDet decomposed table for a ``size``-long axis.

    Returns:
        Tensor of shape (size, size, head_dim): entry [i, j] embeds i - j.
    """
    table = resize_rel_pos(table, 2 * size - 1)
    coords = torch.arange(size, device=table.device)
    return table[coords[:, None] - coords[None, :] + size - 1]


def _beit_rel_pos_index(hw: Tuple[int, int], with_cls: bool,
                        device: torch.device) -> torch.Tensor:
    """BEiT's index into the relative position bias table, (N, N)."""
    h, w = hw
    coords = torch.stack(
        torch.meshgrid(
            torch.arange(h, device=device),
            torch.arange(w, device=device),
            indexing='ij')).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
    index = (rel[..., 0] + h - 1) * (2 * w - 1) + rel[..., 1] + w - 1
    if not with_cls:
        return index
    num_rel = (2 * h - 1) * (2 * w - 1)
    full = torch.empty((h * w + 1, h * w + 1), dtype=index.dtype,
                       device=device)
    full[1:, 1:] = index
    full[0, :] = num_rel  # cls -> token
    full[:, 0] = num_rel + 1  # token -> cls
    full[0, 0] = num_rel + 2  # cls -> cls
    return full


class EVAAttention(nn.Module):
    """Multi-head self-attention of EVA.

    The ``qkv`` projection has no bias; a learned ``q_bias`` and ``v_bias`` are
    added and the key bias is fixed at zero, as in BEiT and EVA. Attention runs
    through ``F.scaled_dot_product_attention`` with any relative position term
    passed as an additive mask.

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
                 norm_layer: Optional[Callable[[int], nn.Module]] = None
                 ) -> None:
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

    def _decomposed_bias(self, q: torch.Tensor,
                         hw: Tuple[int, int]) -> torch.Tensor:
        h, w = hw
        extra = self.num_extra_tokens
        b, heads, _, dim = q.shape
        q_grid = q[:, :, extra:].reshape(b, heads, h, w, dim)
        rel_h = torch.einsum('bnhwc,hkc->bnhwk', q_grid,
                             _decomposed_rel_pos(self.rel_pos_h, h))
        rel_w = torch.einsum('bnhwc,wkc->bnhwk', q_grid,
                             _decomposed_rel_pos(self.rel_pos_w, w))
        bias = (rel_h[..., :, None] + rel_w[..., None, :]).reshape(
            b, heads, h * w, h * w)
        if extra:
            bias = F.pad(bias, (extra, 0, extra, 0))
        return bias

    def _table_bias(self, hw: Tuple[int, int]) -> torch.Tensor:
        table = resize_rel_pos_bias_table(self.relative_position_bias_table,
                                          self.rel_pos_size, hw)
        index = _beit_rel_pos_index(hw, self.num_extra_tokens > 0,
                                    table.device)
        return table[index].permute(2, 0, 1).unsqueeze(0)

    def _rotate(self, t: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
        # RoPE on the patch tokens only, never on the cls token
        # (EVA-02/asuka/modeling_finetune.py:213-220).
        extra = self.num_extra_tokens
        rotated = apply_rot_embed_cat(t[:, :, extra:], rope)
        if extra:
            rotated = torch.cat([t[:, :, :extra], rotated], dim=2)
        return rotated

    def forward(self,
                x: torch.Tensor,
                hw: Tuple[int, int],
                rope: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Attend over a token sequence.

        Args:
            x: Tokens of shape (B, num_extra_tokens + H * W, C).
            hw: The patch grid (H, W) of the sequence.
            rope: Optional rotary embedding of the H * W patch positions,
                (H * W, 2 * head_dim) sin and cos concatenated as timm's
                ``RotaryEmbeddingCat`` builds it, applied to q and k.

        Returns:
            Tensor of the same shape as ``x``.
        """
        b, n, c = x.shape
        qkv = self._qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        if rope is not None:
            q, k = self._rotate(q, rope), self._rotate(k, rope)

        bias = None
        if self.rel_pos == 'decomposed':
            bias = self._decomposed_bias(q, hw).to(q.dtype)
        elif self.rel_pos == 'bias':
            bias = self._table_bias(hw).to(q.dtype)

        x = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias,
            dropout_p=self.attn_drop if self.training else 0.)
        x = x.transpose(1, 2).reshape(b, n, c)
        if self.norm is not None:
            x = self.norm(x)
        return self.proj_drop(self.proj(x))
