"""ViTDet's simple feature pyramid for plain (single-scale) backbones."""
import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule, build_activation_layer, build_norm_layer
from mmengine.model import BaseModule

from eva_mm.registry import MODELS
from ..layers.norm import LayerNorm2d  # noqa: F401  (registers eva_mm.LN2d)


@MODELS.register_module()
class SimpleFPN(BaseModule):
    """The simple feature pyramid of ViTDet (Li et al., arXiv:2203.16527).

    A plain ViT gives one feature map at stride ``p`` (its patch size).
    ViTDet builds the pyramid from that map alone: each level rescales it by
    a power-of-two factor (stride-2 deconvolutions up, with norm and GELU
    between two of them; 2x2 max-pooling down; identity for 1), then a 1x1
    conv to ``out_channels`` and a 3x3 conv, both followed by a norm. An
    extra coarser level (P6) max-pools the last level with stride 2, as
    ViTDet's ``LastLevelMaxPool`` does, for the RPN's largest anchors.

    With a patch-16 backbone the default factors (4, 2, 1, 0.5) give strides
    (4, 8, 16, 32) plus 64 for P6; a patch-8 backbone with (2, 1, 0.5) gives
    the same strides but for the finest.

    Args:
        in_channels: Channels of the backbone's feature map.
        out_channels: Channels of every pyramid level.
        scale_factors: Rescaling of each level relative to the input map,
            finest first; each a power of two.
        num_outs: Number of outputs; levels beyond ``len(scale_factors)``
            are max-pooled (stride 2) from the previous one.
        norm_cfg: Norm after the up-sampling deconvolutions and the 1x1 and
            3x3 convs; ``None`` for none. Channels-first LayerNorm as in
            ViTDet by default.
        act_cfg: Activation between two up-sampling deconvolutions.
        init_cfg: mmengine initialisation config.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int = 256,
                 scale_factors: Sequence[float] = (4.0, 2.0, 1.0, 0.5),
                 num_outs: int = 5,
                 norm_cfg: Optional[dict] = dict(
                     type='eva_mm.LN2d', eps=1e-6),
                 act_cfg: dict = dict(type='GELU'),
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if not scale_factors:
            raise ValueError('SimpleFPN needs at least one scale factor.')
        if list(scale_factors) != sorted(scale_factors, reverse=True):
            raise ValueError('scale_factors must go from the finest level '
                             f'to the coarsest, got {tuple(scale_factors)}.')
        if num_outs < len(scale_factors):
            raise ValueError(f'num_outs={num_outs} is fewer than the '
                             f'{len(scale_factors)} scale factors.')
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.scale_factors = tuple(float(s) for s in scale_factors)
        self.num_outs = num_outs

        self.rescales = nn.ModuleList()
        self.lateral_convs = nn.ModuleList()
        self.fpn_convs = nn.ModuleList()
        for scale in self.scale_factors:
            rescale, channels = self._build_rescale(scale, in_channels,
                                                    norm_cfg, act_cfg)
            self.rescales.append(rescale)
            self.lateral_convs.append(
                ConvModule(
                    channels,
                    out_channels,
                    kernel_size=1,
                    norm_cfg=norm_cfg,
                    act_cfg=None))
            self.fpn_convs.append(
                ConvModule(
                    out_channels,
                    out_channels,
                    kernel_size=3,
                    padding=1,
                    norm_cfg=norm_cfg,
                    act_cfg=None))

    @staticmethod
    def _build_rescale(scale: float, channels: int, norm_cfg: Optional[dict],
                       act_cfg: dict) -> Tuple[nn.Module, int]:
        """The rescaling branch of one level and its output channels."""
        steps = math.log2(scale)
        if steps != round(steps):
            raise ValueError(
                f'Scale factors must be powers of two, got {scale}.')
        steps = int(round(steps))
        if steps == 0:
            return nn.Identity(), channels
        if steps < 0:
            # Repeated 2x2 pooling equals one 2^k x 2^k pooling; one layer.
            size = 2**-steps
            return nn.MaxPool2d(kernel_size=size, stride=size), channels
        layers: List[nn.Module] = []
        for step in range(steps):
            if step:
                if norm_cfg is not None:
                    layers.append(build_norm_layer(norm_cfg, channels)[1])
                layers.append(build_activation_layer(act_cfg))
            # Each doubling halves the channels, as ViTDet does, which keeps
            # the cost of the high-resolution levels in check.
            layers.append(
                nn.ConvTranspose2d(
                    channels, channels // 2, kernel_size=2, stride=2))
            channels //= 2
        return nn.Sequential(*layers), channels

    def forward(self, inputs: Sequence[torch.Tensor]) -> Tuple[torch.Tensor]:
        """Build the pyramid from the last backbone output.

        Args:
            inputs: Backbone outputs; only the last (B, C, H, W) map is used.

        Returns:
            ``num_outs`` maps of shape (B, out_channels, H * s, W * s),
            finest first.
        """
        x = inputs[-1]
        if x.shape[1] != self.in_channels:
            raise ValueError(f'SimpleFPN expects {self.in_channels} input '
                             f'channels, got a map of shape '
                             f'{tuple(x.shape)}.')
        outs = [
            fpn_conv(lateral_conv(rescale(x)))
            for rescale, lateral_conv, fpn_conv in zip(
                self.rescales, self.lateral_convs, self.fpn_convs)
        ]
        while len(outs) < self.num_outs:
            # A 1x1 stride-2 pooling is sub-sampling, ViTDet's P6.
            outs.append(F.max_pool2d(outs[-1], kernel_size=1, stride=2))
        return tuple(outs)
