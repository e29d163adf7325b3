"""mmseg's EncoderDecoder with sliding-window inference that works for
Mask2Former, and EVA-01's way of turning Mask2Former outputs into a
semantic map."""
from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn.bricks.transformer import FFN
from mmseg.models.segmentors import EncoderDecoder
from mmseg.structures import SegDataSample
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from eva_mm.registry import MODELS


class CheckpointedSequential(nn.Sequential):
    """``nn.Sequential`` with activation checkpointing while training.

    Replaces an mmcv ``FFN``'s ``layers`` (same children, so the same
    state-dict names): the official EVA-01 head's FFNs run their layers
    under ``torch.utils.checkpoint`` when the input requires grad
    (``with_cp=True``, official ``seg/mmseg_custom/models/utils/
    transformer.py:323-326``), which mmcv 2.x's ``FFN`` has no option for.
    """

    def forward(self, x: Tensor) -> Tensor:
        """The layers in order, recomputed in the backward pass."""
        if self.training and x.requires_grad:
            return checkpoint(super().forward, x, use_reentrant=False)
        return super().forward(x)


@MODELS.register_module()
class Mask2FormerEncoderDecoder(EncoderDecoder):
    """An ``EncoderDecoder`` whose logits always match the input they come
    from, as sliding-window inference needs.

    mmseg 1.2.2's ``Mask2FormerHead.predict`` upsamples its masks to the
    image's ``pad_shape`` when the meta has one (any padding or
    ``ResizeToMultiple`` sets it), while ``slide_inference`` only changes
    ``img_shape`` to the window's; the window's logits then come out at the
    whole image's size and fail to paste (open-mmlab/mmsegmentation PR
    #3752, unmerged). Here every forward gets ``pad_shape`` set to the size
    of the tensor it decodes, which is what both ``'whole'`` (the padded
    batch) and ``'slide'`` (the window) inference need.

    With ``semantic_at_mask_resolution=True`` the semantic map is computed
    as EVA-01 computes it: ``softmax(class logits)[..., :-1]`` times
    ``sigmoid(mask logits)`` summed over the queries at the resolution of
    the mask features (1/4 of the input), and the probability map is then
    resized bilinearly to the input (official
    ``seg/mmseg_custom/models/decode_heads/mask2former_head.py:576-578`` and
    ``segmentors/encoder_decoder_mask2former.py:75``). mmseg 1.2.2 (the
    default, ``False``) upsamples the mask logits to the input before the
    sigmoid instead, which gives other numbers. Training is the same either
    way.

    ``head_ffn_with_cp=True`` runs the layers of every FFN of the decode
    head (pixel decoder and transformer decoder) under activation
    checkpointing while training, as the official configs'
    ``ffn_cfgs=dict(..., with_cp=True)``; names and numbers are unchanged.
    Everything else is mmseg's ``EncoderDecoder``.

    Args:
        semantic_at_mask_resolution: Compute the semantic map at the mask
            features' resolution and resize the probabilities (EVA-01).
        head_ffn_with_cp: Activation checkpointing in the head's FFNs.
        **kwargs: mmseg ``EncoderDecoder`` arguments.
    """

    def __init__(self,
                 semantic_at_mask_resolution: bool = False,
                 head_ffn_with_cp: bool = False,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.semantic_at_mask_resolution = semantic_at_mask_resolution
        self.head_ffn_with_cp = head_ffn_with_cp
        if head_ffn_with_cp:
            for module in self.decode_head.modules():
                if isinstance(module, FFN):
                    module.layers = CheckpointedSequential(*module.layers)

    def semantic_map(self, inputs: Tensor,
                     batch_img_metas: List[dict]) -> Tensor:
        """EVA-01's semantic map of ``inputs``, at 1/4 resolution.

        Args:
            inputs: Images or windows, (N, C, H, W).
            batch_img_metas: Their meta information.

        Returns:
            Class probabilities summed over the queries,
            (N, num_classes, H / 4, W / 4) (the mask features' size).
        """
        feats = self.extract_feat(inputs)
        samples = [SegDataSample(metainfo=meta) for meta in batch_img_metas]
        cls_logits, mask_logits = self.decode_head(feats, samples)
        # Only the last decoder layer's prediction is used at test time.
        scores = F.softmax(cls_logits[-1], dim=-1)[..., :-1]
        return torch.einsum('bqc,bqhw->bchw', scores,
                            mask_logits[-1].sigmoid())

    def encode_decode(self, inputs: Tensor,
                      batch_img_metas: List[dict]) -> Tensor:
        """Decode ``inputs`` into logits of their own spatial size.

        Args:
            inputs: Images or windows, (N, C, H, W).
            batch_img_metas: Their meta information; not modified.

        Returns:
            Segmentation logits, (N, num_classes, H, W).
        """
        metas = [
            dict(meta, pad_shape=tuple(inputs.shape[2:]))
            for meta in batch_img_metas
        ]
        if not self.semantic_at_mask_resolution:
            return super().encode_decode(inputs, metas)
        return F.interpolate(
            self.semantic_map(inputs, metas),
            size=inputs.shape[2:],
            mode='bilinear',
            align_corners=self.align_corners)
