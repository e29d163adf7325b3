"""Cascade R-CNN head that averages the stages' probabilities at test time."""
from typing import Any, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmdet.models.roi_heads import CascadeRoIHead
from mmdet.models.roi_heads.bbox_heads import BBoxHead
from mmdet.utils import MultiConfig
from torch import Tensor

from eva_mm.registry import MODELS


@MODELS.register_module()
class ProbabilityAveragingCascadeRoIHead(CascadeRoIHead):
    """mmdet's ``CascadeRoIHead`` scoring RoIs by the mean stage probability.

    At test time mmdet averages the stages' classification logits and then
    applies the activation once; detectron2's ``CascadeROIHeads``, which
    EVA's official ViTDet configs use, applies each stage's activation
    (``predict_probs``) and averages the probabilities. The two differ (the
    softmax of a mean is not the mean of the softmaxes), so weights converted
    from EVA only reproduce its numbers with the latter.

    Each stage's probabilities are those its own ``predict_by_feat`` would
    give: the softmax, or the loss's custom activation (the sigmoid of
    ``eva_mm.FederatedLoss``). The mean is handed to the final bbox head as
    the inverse of its activation (log for the softmax, logit for the
    sigmoid), so its ``predict_by_feat`` recovers exactly these averaged
    probabilities; ``forward`` returns the same scores. Training, the
    refinement of the RoIs between stages and the masks are mmdet's.
    """

    # The stages' probabilities, collected by ``_bbox_forward`` while
    # ``_refine_roi`` runs (and only then: training leaves it None).
    _stage_probs: Optional[List[Tensor]] = None

    def init_bbox_head(self, bbox_roi_extractor: MultiConfig,
                       bbox_head: MultiConfig) -> None:
        """Build the stages, then check the final one can take probabilities.

        Args:
            bbox_roi_extractor: Config of the box RoI extractor(s).
            bbox_head: Config of the box head(s), one or one per stage.
        """
        super().init_bbox_head(bbox_roi_extractor, bbox_head)
        final_head = self.bbox_head[-1]
        if not final_head.custom_cls_channels:
            return
        # The inverse is only known for an element-wise sigmoid; probing the
        # activation checks that instead of trusting a loss's name. On the
        # CPU explicitly: models are also built on the meta device.
        channels = final_head.loss_cls.get_cls_channels(
            final_head.num_classes)
        probe = torch.linspace(-6., 6., 2 * channels,
                               device='cpu').view(2, channels)
        activated = final_head.loss_cls.get_activation(probe)
        if (activated.shape != probe.shape
                or not torch.allclose(activated, probe.sigmoid())):
            raise ValueError(
                f'The last bbox head\'s {type(final_head.loss_cls).__name__} '
                'has a custom activation that is neither the softmax nor an '
                'element-wise sigmoid, so ProbabilityAveragingCascadeRoIHead '
                'cannot hand the averaged probabilities back to its '
                'predict_by_feat. Use a softmax loss or a sigmoid one such as '
                'eva_mm.FederatedLoss, or mmdet\'s CascadeRoIHead (which '
                'averages logits).')

    def _bbox_forward(self, stage: int, x: Tuple[Tensor],
                      rois: Tensor) -> dict:
        """mmdet's box forward; records the probabilities inside _refine_roi.

        Args:
            stage: The cascade stage.
            x: Multi-level image features.
            rois: RoIs of shape (n, 5), batch index first.

        Returns:
            mmdet's dict with ``cls_score``, ``bbox_pred`` and ``bbox_feats``.
        """
        bbox_results = super()._bbox_forward(stage, x, rois)
        if self._stage_probs is not None:
            self._stage_probs.append(
                self._activate(self.bbox_head[stage],
                               bbox_results['cls_score']))
        return bbox_results

    def _refine_roi(self, x: Tuple[Tensor], rois: Tensor,
                    batch_img_metas: List[dict],
                    num_proposals_per_img: Sequence[int], **kwargs: Any
                    ) -> Tuple[Sequence[Tensor], List[Tensor],
                               Sequence[Optional[Tensor]]]:
        """mmdet's multi-stage refinement with probability-averaged scores.

        Args:
            x: Multi-level image features.
            rois: RoIs of shape (n, 5), batch index first.
            batch_img_metas: Image information of each image.
            num_proposals_per_img: Number of RoIs of each image.
            **kwargs: Passed on to mmdet's ``_refine_roi``.

        Returns:
            The refined RoIs (per image), the per-image scores whose
            activation by the final bbox head is the mean of the stages'
            probabilities, and the last stage's box predictions (per image).
        """
        self._stage_probs = []
        try:
            # mmdet's averaged logits are dropped; its refinement is kept.
            rois, _, bbox_preds = super()._refine_roi(
                x, rois, batch_img_metas, num_proposals_per_img, **kwargs)
            mean_probs = torch.stack(self._stage_probs).mean(dim=0)
        finally:
            self._stage_probs = None
        cls_scores = self._deactivate(self.bbox_head[-1], mean_probs)
        return rois, list(cls_scores.split(num_proposals_per_img)), bbox_preds

    @staticmethod
    def _activate(bbox_head: BBoxHead, cls_score: Tensor) -> Tensor:
        """A stage's probabilities, as its ``predict_by_feat`` computes them.

        Args:
            bbox_head: The stage's bbox head.
            cls_score: Its classification logits, shape (n, channels).

        Returns:
            Probabilities of shape (n, num_classes + 1).
        """
        if bbox_head.custom_cls_channels:
            return bbox_head.loss_cls.get_activation(cls_score)
        return F.softmax(cls_score, dim=-1)

    @staticmethod
    def _deactivate(bbox_head: BBoxHead, probs: Tensor) -> Tensor:
        """Scores that ``bbox_head``'s activation maps back to ``probs``.

        Args:
            bbox_head: The final bbox head, softmax or sigmoid (checked when
                the head is built).
            probs: Probabilities of shape (n, num_classes + 1).

        Returns:
            Logits of the same shape; clamping keeps them finite.
        """
        finfo = torch.finfo(probs.dtype)
        if bbox_head.custom_cls_channels:
            return torch.logit(probs.clamp(finfo.tiny, 1 - finfo.eps))
        # The mean of distributions sums to 1, so softmax(log p) = p.
        return probs.clamp(min=finfo.tiny).log()
