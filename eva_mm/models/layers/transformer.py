"""The pre-norm transformer block of EVA and its parts."""
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, SwiGLU
from torch.utils.checkpoint import checkpoint

from .attention import EVAAttention, TokenPositions
from .norm import LayerNorm


def window_partition(x: torch.Tensor,
                     window_size: int) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """Split a (B, H, W, C) map into windows, padding H and W up.

    Returns:
        Windows of shape (B * num_windows, window_size**2, C) and the padded
        (H, W).
    """
    b, h, w, c = x.shape
    pad_h = (window_size - h % window_size) % window_size
    pad_w = (window_size - w % window_size) % window_size
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window_size, window_size, wp // window_size,
               window_size, c)
    windows = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size**2, c)
    return windows, (hp, wp)


def window_unpartition(windows: torch.Tensor, window_size: int,
                       padded_hw: Tuple[int, int],
                       hw: Tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`window_partition`, dropping the padding.

    Returns:
        Map of shape (B, H, W, C).
    """
    hp, wp = padded_hw
    h, w = hw
    c = windows.shape[-1]
    b = windows.shape[0] // (hp * wp // window_size**2)
    x = windows.view(b, hp // window_size, wp // window_size, window_size,
                     window_size, c)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, c)
    return x[:, :h, :w].contiguous()


class EVABlock(nn.Module):
    """A pre-norm transformer block: attention and MLP, each residual.

    Args:
        dim: Token dimension.
        num_heads: Attention heads.
        mlp_hidden_dim: Hidden width of the MLP.
        qkv_bias: Learn ``q_bias`` and ``v_bias`` in attention.
        drop_path: Stochastic depth rate of this block.
        attn_drop: Dropout on attention weights.
        proj_drop: Dropout after the attention and MLP projections.
        layer_scale_init_value: Initial value of the per-channel layer scale
            ``gamma_1``/``gamma_2``; 0 disables layer scale.
        norm_eps: LayerNorm epsilon.
        fp32_norm: Compute the LayerNorms in fp32.
        window_size: Attend within non-overlapping windows of this many
            patches (padded); 0 attends globally.
        rel_pos: Relative position term of attention, see
            :class:`EVAAttention`.
        rel_pos_size: The (H, W) the relative tables are sized for.
        num_extra_tokens: Leading non-patch tokens in the sequence.
        swiglu_mlp: Use timm's ``SwiGLU`` MLP (``fc1_g``, ``fc1_x``, ``fc2``;
            EVA-02) instead of the GELU ``Mlp``.
        scale_mlp: Add the sub-LN ``mlp.norm`` on the MLP's hidden features
            before ``fc2`` (EVA-02 base/large, ``ffn_ln`` officially).
        scale_attn_inner: Add the inner LayerNorm ``attn.norm`` before the
            attention's output projection (EVA-02 CLIP, ``inner_attn_ln``).
        fp32_attention: Compute the attention in fp32 under mixed precision,
            see :class:`EVAAttention`.
        checkpoint_attn: Recompute the attention (with its LayerNorm) in the
            backward pass instead of keeping its activations, while
            training.
    """

    def __init__(self,
                 dim: int,
                 num_heads: int,
                 mlp_hidden_dim: int,
                 qkv_bias: bool = True,
                 drop_path: float = 0.,
                 attn_drop: float = 0.,
                 proj_drop: float = 0.,
                 layer_scale_init_value: float = 0.,
                 norm_eps: float = 1e-6,
                 fp32_norm: bool = False,
                 window_size: int = 0,
                 rel_pos: Optional[str] = None,
                 rel_pos_size: Optional[Tuple[int, int]] = None,
                 num_extra_tokens: int = 0,
                 swiglu_mlp: bool = False,
                 scale_mlp: bool = False,
                 scale_attn_inner: bool = False,
                 fp32_attention: bool = False,
                 checkpoint_attn: bool = False) -> None:
        super().__init__()
        if window_size and num_extra_tokens:
            raise ValueError(
                'Window attention works on patch tokens only: build the '
                'backbone with with_cls_token=False to use windows.')
        self.window_size = window_size
        self.checkpoint_attn = checkpoint_attn

        def norm_layer(width: int,
                       device: Optional[torch.device] = None,
                       dtype: Optional[torch.dtype] = None) -> LayerNorm:
            # timm's MLPs pass factory kwargs to their norm layer.
            return LayerNorm(
                width, eps=norm_eps, fp32=fp32_norm).to(
                    device=device, dtype=dtype)

        self.norm1 = LayerNorm(dim, eps=norm_eps, fp32=fp32_norm)
        self.attn = EVAAttention(
            dim,
            num_heads,
            qkv_bias=qkv_bias,
            attn_drop=attn_drop,
            proj_drop=proj_drop,
            rel_pos=rel_pos,
            rel_pos_size=(window_size, window_size)
            if window_size else rel_pos_size,
            num_extra_tokens=num_extra_tokens,
            norm_layer=norm_layer if scale_attn_inner else None,
            fp32_attention=fp32_attention)
        self.drop_path = DropPath(drop_path) if drop_path else nn.Identity()
        self.norm2 = LayerNorm(dim, eps=norm_eps, fp32=fp32_norm)
        # timm's MLPs compute what EVA's do (EVA-02/asuka/modeling_finetune.py
        # Mlp/SwiGLU: w1 -> fc1_g, w2 -> fc1_x, ffn_ln -> norm, w3 -> fc2).
        mlp_cls = SwiGLU if swiglu_mlp else Mlp
        self.mlp = mlp_cls(
            dim,
            mlp_hidden_dim,
            norm_layer=norm_layer if scale_mlp else None,
            drop=proj_drop)
        if layer_scale_init_value > 0:
            self.gamma_1 = nn.Parameter(
                torch.full((dim, ), layer_scale_init_value))
            self.gamma_2 = nn.Parameter(
                torch.full((dim, ), layer_scale_init_value))
        else:
            self.gamma_1 = self.gamma_2 = None

    def _attend(self, x: torch.Tensor,
                positions: TokenPositions) -> torch.Tensor:
        x = self.norm1(x)
        if not self.window_size:
            return self.attn(x, positions=positions)
        b, _, c = x.shape
        hw = positions.hw
        windows, padded_hw = window_partition(
            x.view(b, *hw, c), self.window_size)
        windows = self.attn(
            windows, positions=positions.window(self.window_size))
        x = window_unpartition(windows, self.window_size, padded_hw, hw)
        return x.view(b, -1, c)

    def forward(self, x: torch.Tensor, *,
                positions: TokenPositions) -> torch.Tensor:
        """Run the block on (B, N, C) tokens laid out on ``positions.grid``.

        Args:
            x: Tokens (B, extra + H * W, C).
            positions: The patch grid, and the RoPE of the positions one
                attention call sees: the window's in window blocks, the
                grid's otherwise.
        """
        if self.checkpoint_attn and self.training and x.requires_grad:
            attn = checkpoint(
                self._attend, x, positions, use_reentrant=False)
        else:
            attn = self._attend(x, positions)
        if self.gamma_1 is not None:
            attn = self.gamma_1 * attn
        x = x + self.drop_path(attn)
        mlp = self.mlp(self.norm2(x))
        if self.gamma_2 is not None:
            mlp = self.gamma_2 * mlp
        return x + self.drop_path(mlp)
