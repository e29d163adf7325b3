"""EVA's masked-feature prediction head."""
from typing import Optional

import torch
import torch.nn as nn
from mmengine.model import BaseModule

from eva_mm.registry import MODELS


@MODELS.register_module()
class EVAMIMHead(BaseModule):
    """A linear map from masked student tokens to teacher features.

    As the official EVA-01 ``lm_head``: only the masked positions are
    projected (unmasked tokens never reach the loss, so projecting them would
    be wasted work), and the loss, by default mmpretrain's
    ``CosineSimilarityLoss`` (``-cos``, EVA's objective), is computed in fp32
    even under autocast, since a normalised dot product of low-precision
    1024-d vectors loses most of the signal late in training.

    mmpretrain's ``MIMHead`` is not used: it has no projection and applies
    the loss to every position with a weight mask.

    Args:
        in_channels: The student's token width.
        out_channels: The teacher's feature width (768 for CLIP ViT-L/14).
        loss: The loss config, called as ``loss(pred, target)`` on (M, D)
            masked tokens.
        init_cfg: Initialisation; EVA's truncated normal (std 0.02) by
            default.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 loss: dict = dict(type='mmpretrain.CosineSimilarityLoss'),
                 init_cfg: Optional[dict] = dict(
                     type='TruncNormal', layer='Linear', std=0.02,
                     bias=0.)) -> None:
        super().__init__(init_cfg=init_cfg)
        self.fc = nn.Linear(in_channels, out_channels)
        self.loss_module = MODELS.build(loss)

    def predict_masked(self, tokens: torch.Tensor,
                       mask: torch.Tensor) -> torch.Tensor:
        """Project the masked patch tokens.

        Args:
            tokens: (B, N, C) student patch tokens (no cls token).
            mask: (B, N) bool, True where masked.

        Returns:
            (M, D) predictions, M = mask.sum(), in row-major batch order.
        """
        return self.fc(tokens[mask])

    def loss(self, tokens: torch.Tensor, target: torch.Tensor,
             mask: torch.Tensor) -> torch.Tensor:
        """The loss between masked predictions and the teacher's features.

        Args:
            tokens: (B, N, C) student patch tokens.
            target: (B, N, D) teacher features for every patch.
            mask: (B, N) bool, True where masked.

        Returns:
            The scalar fp32 loss.
        """
        pred = self.predict_masked(tokens, mask)
        with torch.autocast(pred.device.type, enabled=False):
            return self.loss_module(pred.float(), target[mask].float())
