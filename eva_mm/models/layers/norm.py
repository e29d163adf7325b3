"""Normalisation layers for channels-first feature maps."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from eva_mm.registry import MODELS


@MODELS.register_module(name=['LN2d', 'LayerNorm2d'])
class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, H, W) map, as in ViTDet.

    ``nn.LayerNorm`` normalises trailing dimensions, so convolutional necks
    on a ViT either permute around it or use this layer. It normalises each
    pixel's C values, unlike ``GroupNorm(1, C)``, which pools over H and W
    too and so mixes statistics of objects with the background.

    Being an ``nn.LayerNorm`` subclass, mmcv's ``build_norm_layer`` names it
    ``ln`` and passes ``(num_features, eps=...)``, so
    ``norm_cfg=dict(type='eva_mm.LN2d')`` works in any ``ConvModule``.

    Args:
        num_channels: Channels C.
        eps: Numerical epsilon.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__(num_channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Channels-last and back keeps the fused layer_norm kernel; the
        # permutes are views, only the final contiguous copy costs memory.
        x = F.layer_norm(
            x.permute(0, 2, 3, 1), self.normalized_shape, self.weight,
            self.bias, self.eps)
        return x.permute(0, 3, 1, 2).contiguous()
