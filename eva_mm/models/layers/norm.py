"""LayerNorms of the token sequences and of channels-first feature maps."""
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


class LayerNorm(nn.LayerNorm):
    """LayerNorm that can compute in fp32 whatever the input dtype.

    The official EVA code keeps its LayerNorms in fp32 under fp16 training;
    ``fp32=True`` does the same here.

    Args:
        dim: Normalised dimension.
        eps: Numerical epsilon (EVA uses 1e-6).
        fp32: Compute in fp32 and cast back to the input dtype.
    """

    def __init__(self, dim: int, eps: float = 1e-6, fp32: bool = False):
        super().__init__(dim, eps=eps)
        self.fp32 = fp32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fp32 or x.dtype == torch.float32:
            return super().forward(x)
        return F.layer_norm(x.float(), self.normalized_shape,
                            self.weight.float(), self.bias.float(),
                            self.eps).to(x.dtype)
