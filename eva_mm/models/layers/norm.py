"""LayerNorms of the token sequences and of channels-first feature maps."""
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.models.utils import LayerNorm2d as MMPretrainLayerNorm2d

from eva_mm.registry import MODELS


@MODELS.register_module(name=['LN2d', 'LayerNorm2d'])
class LayerNorm2d(MMPretrainLayerNorm2d):
    """mmpretrain's ``LayerNorm2d`` with ViTDet's default epsilon, 1e-6.

    It normalises each pixel's C values of a (B, C, H, W) map, unlike
    ``GroupNorm(1, C)``, which pools over H and W too and so mixes
    statistics of objects with the background; its output is contiguous
    (timm's ``LayerNorm2d`` computes the same values but returns the
    permuted view, which changes the memory format the next conv picks).
    The subclass only changes the default epsilon (``nn.LayerNorm``'s is
    1e-5; detectron2's ``LayerNorm``, which EVA's SimpleFPN uses, has 1e-6:
    EVA-01/det/detectron2/layers/batch_norm.py:288), so the registered
    ``eva_mm.LN2d`` builds as before without an ``eps``.

    Being an ``nn.LayerNorm`` subclass, mmcv's ``build_norm_layer`` names it
    ``ln`` and passes ``(num_features, eps=...)``, so
    ``norm_cfg=dict(type='eva_mm.LN2d')`` works in any ``ConvModule``.

    Args:
        num_channels: Channels C.
        eps: Numerical epsilon.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__(num_channels, eps=eps)


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
