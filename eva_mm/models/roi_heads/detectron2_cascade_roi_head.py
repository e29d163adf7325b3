"""detectron2's Cascade R-CNN training and mask semantics on mmdet parts."""
from typing import List, Optional, Tuple

import torch
from mmdet.models.roi_heads.bbox_heads import BBoxHead
from mmdet.registry import MODELS as MMDET_MODELS
from mmdet.models.task_modules.samplers import PseudoSampler, SamplingResult
from mmdet.models.utils import empty_instances, unpack_gt_instances
from mmdet.structures import SampleList
from mmdet.structures.bbox import bbox2roi
from mmdet.utils import InstanceList, MultiConfig
from mmengine.structures import InstanceData
from torch import Tensor

from eva_mm.registry import MODELS
from .probability_averaging_cascade_roi_head import \
    ProbabilityAveragingCascadeRoIHead


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; the backward multiplies the gradient by ``scale``."""

    @staticmethod
    def forward(ctx, tensor: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tuple[Tensor, None]:
        return grad * ctx.scale, None


@MODELS.register_module()
class Detectron2CascadeRoIHead(ProbabilityAveragingCascadeRoIHead):
    """Cascade (Mask) R-CNN head that trains and tests as detectron2's.

    EVA-01 trains and evaluates its detectors with detectron2's
    ``CascadeROIHeads`` (EVA-01/det/detectron2/modeling/roi_heads/
    cascade_rcnn.py), which differs from mmdet's ``CascadeRoIHead`` in:

    - **Stages 2 and 3** train on the boxes the previous stage predicts for
      *all* of its RoIs (the added ground truth included), clipped to the
      image, empty ones dropped (``_create_proposals_from_boxes``,
      :247-264), re-matched to the ground truth at the stage's IoU
      (``_match_and_label_boxes``, :196-201, 218-244): no re-sampling, no
      ground truth re-added, no positive-fraction cap. Their ``train_cfg``
      sampler must therefore be ``PseudoSampler`` (every RoI kept, labelled
      by the assigner). mmdet instead re-samples 512 RoIs per stage with
      the ground truth re-added, and refines only the non-gt ones.
    - **Loss weights**: detectron2 sums the stages' losses with weight 1
      and scales the gradient that reaches the pooled box features by
      1 / num_stages (``_ScaleGradient``, :20-28, 301-307). Set
      ``stage_loss_weights=[1, 1, 1]``; the gradient scale is applied here
      while training.
    - **One mask head** (a dict, not one per stage), trained on the
      foreground of the stage-1 sampled RoIs (:152-157 with
      ``StandardROIHeads._forward_mask``, roi_heads.py:836-843) and run
      once at test on the final boxes. Its loss is ``loss_mask``.

    At test the stage scores are the mean of the stages' probabilities
    (:class:`ProbabilityAveragingCascadeRoIHead`), as detectron2's.
    """

    def init_mask_head(self, mask_roi_extractor: MultiConfig,
                       mask_head: MultiConfig) -> None:
        """Build the one mask head and its RoI extractor.

        Args:
            mask_roi_extractor: Config of the mask RoI extractor; ``None``
                shares the first stage's box RoI extractor.
            mask_head: Config of the mask head (one dict).
        """
        if isinstance(mask_head, (list, tuple)):
            raise TypeError(
                'Detectron2CascadeRoIHead has one mask head, as detectron2: '
                'give mask_head as one dict (mmdet.CascadeRoIHead builds one '
                'per stage from a list).')
        if isinstance(mask_roi_extractor, (list, tuple)):
            raise TypeError('Detectron2CascadeRoIHead has one mask RoI '
                            'extractor: give mask_roi_extractor as one dict.')
        # mmdet's registry, as CascadeRoIHead builds its parts: unscoped
        # names (SingleRoIExtractor, FCNMaskHead) are mmdet's.
        self.mask_head = MMDET_MODELS.build(mask_head)
        if mask_roi_extractor is not None:
            self.share_roi_extractor = False
            self.mask_roi_extractor = MMDET_MODELS.build(mask_roi_extractor)
        else:
            self.share_roi_extractor = True
            self.mask_roi_extractor = self.bbox_roi_extractor[0]

    def init_assigner_sampler(self) -> None:
        """mmdet's per-stage assigners and samplers, checked for stages 2+.

        Raises:
            ValueError: If a later stage samples its RoIs.
        """
        super().init_assigner_sampler()
        for stage, sampler in enumerate(self.bbox_sampler[1:], start=1):
            if not isinstance(sampler, PseudoSampler):
                raise ValueError(
                    f'train_cfg.rcnn[{stage}].sampler is '
                    f'{type(sampler).__name__}, but Detectron2CascadeRoIHead '
                    'trains stages 2+ on every refined box of the previous '
                    "stage: set sampler=dict(type='PseudoSampler') there "
                    "(or use mmdet's CascadeRoIHead to re-sample).")

    def _bbox_forward(self, stage: int, x: Tuple[Tensor],
                      rois: Tensor) -> dict:
        """Box forward; in training the features' gradient is scaled.

        Args:
            stage: The cascade stage.
            x: Multi-level image features.
            rois: RoIs of shape (n, 5), batch index first.

        Returns:
            mmdet's dict with ``cls_score``, ``bbox_pred`` and ``bbox_feats``.
        """
        if not self.training:
            return super()._bbox_forward(stage, x, rois)
        extractor = self.bbox_roi_extractor[stage]
        bbox_feats = extractor(x[:extractor.num_inputs], rois)
        # detectron2 adds the stage losses but divides the gradient into the
        # shared features by the number of stages (cascade_rcnn.py:301-307).
        bbox_feats = _ScaleGradient.apply(bbox_feats, 1.0 / self.num_stages)
        cls_score, bbox_pred = self.bbox_head[stage](bbox_feats)
        return dict(
            cls_score=cls_score, bbox_pred=bbox_pred, bbox_feats=bbox_feats)

    @staticmethod
    def refine_boxes(bbox_head: BBoxHead, rois: Tensor, bbox_pred: Tensor,
                     batch_img_metas: List[dict]) -> List[Tensor]:
        """Next-stage proposals: every RoI's predicted box, clipped, non-empty.

        Args:
            bbox_head: The stage's box head (its coder decodes).
            rois: The stage's RoIs (n, 5), batch index first.
            bbox_pred: Its class-agnostic deltas (n, 4).
            batch_img_metas: Per image, ``img_shape`` to clip to.

        Returns:
            Per image, the boxes (m_i, 4) with positive width and height.
        """
        boxes = []
        for img_id, meta in enumerate(batch_img_metas):
            in_img = rois[:, 0] == img_id
            decoded = bbox_head.bbox_coder.decode(
                rois[in_img, 1:], bbox_pred[in_img].detach(),
                max_shape=meta['img_shape'])
            keep = ((decoded[:, 2] > decoded[:, 0]) &
                    (decoded[:, 3] > decoded[:, 1]))
            boxes.append(decoded[keep])
        return boxes

    def _match(self, stage: int, boxes: List[Tensor],
               batch_gt_instances: InstanceList,
               batch_gt_instances_ignore: InstanceList
               ) -> List[SamplingResult]:
        """Label every refined box with the stage's assigner (no sampling).

        Args:
            stage: The cascade stage (1 or later).
            boxes: Per image, the previous stage's refined boxes.
            batch_gt_instances: Per image, the ground truth.
            batch_gt_instances_ignore: Per image, ignored ground truth.

        Returns:
            Per image, all boxes as positives or negatives.
        """
        results = []
        for img_boxes, gt, gt_ignore in zip(boxes, batch_gt_instances,
                                            batch_gt_instances_ignore):
            proposals = InstanceData(priors=img_boxes)
            assign_result = self.bbox_assigner[stage].assign(
                proposals, gt, gt_ignore)
            results.append(self.bbox_sampler[stage].sample(
                assign_result, proposals, gt))
        return results

    def loss(self, x: Tuple[Tensor], rpn_results_list: InstanceList,
             batch_data_samples: SampleList) -> dict:
        """detectron2's cascade training (see the class doc).

        Args:
            x: Multi-level image features.
            rpn_results_list: Per image, the RPN proposals (``bboxes``).
            batch_data_samples: The batch, with the ground truth.

        Returns:
            ``s{stage}.loss_cls`` / ``loss_bbox`` / ``acc`` per stage
            (weighted by ``stage_loss_weights``) and ``loss_mask``.
        """
        batch_gt_instances, batch_gt_instances_ignore, batch_img_metas = \
            unpack_gt_instances(batch_data_samples)
        losses = {}
        sampling_results = []
        for img_id, proposals in enumerate(rpn_results_list):
            proposals.priors = proposals.pop('bboxes')
            assign_result = self.bbox_assigner[0].assign(
                proposals, batch_gt_instances[img_id],
                batch_gt_instances_ignore[img_id])
            sampling_results.append(self.bbox_sampler[0].sample(
                assign_result,
                proposals,
                batch_gt_instances[img_id],
                feats=[level[img_id][None] for level in x]))
        first_stage_samples = sampling_results
        for stage in range(self.num_stages):
            self.current_stage = stage
            if stage > 0:
                sampling_results = self._match(stage, boxes,
                                               batch_gt_instances,
                                               batch_gt_instances_ignore)
            bbox_results = self.bbox_loss(stage, x, sampling_results)
            weight = self.stage_loss_weights[stage]
            for name, value in bbox_results['loss_bbox'].items():
                losses[f's{stage}.{name}'] = (
                    value * weight if 'loss' in name else value)
            if stage < self.num_stages - 1:
                with torch.no_grad():
                    boxes = self.refine_boxes(self.bbox_head[stage],
                                              bbox_results['rois'],
                                              bbox_results['bbox_pred'],
                                              batch_img_metas)
        if self.with_mask:
            losses.update(
                self._mask_loss_once(x, first_stage_samples,
                                     batch_gt_instances))
        return losses

    def _mask_forward_once(self, x: Tuple[Tensor], rois: Tensor) -> Tensor:
        """The mask head's logits for ``rois`` (n, 5)."""
        extractor = self.mask_roi_extractor
        return self.mask_head(extractor(x[:extractor.num_inputs], rois))

    def _mask_loss_once(self, x: Tuple[Tensor],
                        sampling_results: List[SamplingResult],
                        batch_gt_instances: InstanceList) -> dict:
        """The mask loss on the stage-1 sampled foreground RoIs.

        Args:
            x: Multi-level image features.
            sampling_results: The first stage's sampling results.
            batch_gt_instances: Per image, the ground truth with masks.

        Returns:
            ``{'loss_mask': ...}``.
        """
        pos_rois = bbox2roi([res.pos_priors for res in sampling_results])
        mask_preds = self._mask_forward_once(x, pos_rois)
        targets = self.mask_head.loss_and_target(
            mask_preds=mask_preds,
            sampling_results=sampling_results,
            batch_gt_instances=batch_gt_instances,
            rcnn_train_cfg=self.train_cfg[0])
        return targets['loss_mask']

    def predict_mask(self,
                     x: Tuple[Tensor],
                     batch_img_metas: List[dict],
                     results_list: InstanceList,
                     rescale: bool = False) -> InstanceList:
        """Run the one mask head on the final boxes.

        Args:
            x: Multi-level image features.
            batch_img_metas: Per image, its meta information.
            results_list: Per image, the detections (``bboxes`` in the
                network input's scale).
            rescale: Whether to return masks in the original image space.

        Returns:
            The detections with ``masks`` (and, for
            ``eva_mm.MasknessFCNMaskHead``, maskness-rescored ``scores``).
        """
        mask_rois = bbox2roi([res.bboxes for res in results_list])
        if mask_rois.shape[0] == 0:
            return empty_instances(
                batch_img_metas,
                mask_rois.device,
                task_type='mask',
                instance_results=results_list,
                mask_thr_binary=self.test_cfg.mask_thr_binary)
        mask_preds = self._mask_forward_once(x, mask_rois)
        mask_preds = mask_preds.split([len(res) for res in results_list])
        return self.mask_head.predict_by_feat(
            mask_preds=mask_preds,
            results_list=results_list,
            batch_img_metas=batch_img_metas,
            rcnn_test_cfg=self.test_cfg,
            rescale=rescale)

    def forward(self,
                x: Tuple[Tensor],
                rpn_results_list: InstanceList,
                batch_data_samples: Optional[SampleList] = None) -> tuple:
        """Tensor-mode forward: the cascade's scores and boxes, one mask.

        Args:
            x: Multi-level image features.
            rpn_results_list: Per image, the RPN proposals (``bboxes``).
            batch_data_samples: The batch (for the image shapes).

        Returns:
            Per-image averaged scores and last-stage deltas, then (with a
            mask head) the per-image mask logits of the refined RoIs.
        """
        batch_img_metas = [sample.metainfo for sample in batch_data_samples]
        proposals = [res.bboxes for res in rpn_results_list]
        num_proposals_per_img = tuple(len(p) for p in proposals)
        rois, cls_scores, bbox_preds = self._refine_roi(
            x, bbox2roi(proposals), batch_img_metas, num_proposals_per_img)
        results = (cls_scores, bbox_preds)
        if self.with_mask:
            mask_preds = self._mask_forward_once(x, torch.cat(rois))
            results += (mask_preds.split(num_proposals_per_img), )
        return results
