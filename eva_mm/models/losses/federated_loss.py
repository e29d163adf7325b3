"""Sigmoid cross-entropy with the federated loss, EVA's LVIS classifier loss.

The federated loss (Zhou et al., "Probabilistic two-stage detection",
arXiv:2103.07461; detectron2's ``use_fed_loss``) trains each RoI's per-class
sigmoid only on a subset of the categories: those present in the batch plus
negatives drawn by frequency. LVIS is federated (an image is exhaustively
annotated for a few categories only), so a category absent from the labels
of an image is not proof that it is absent from the image; sampling the
negatives by ``image_count ** 0.5`` keeps rare classes from being pushed down
on every RoI.
"""
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.models.losses import accuracy, weight_reduce_loss
from mmengine.fileio import load
from torch import Tensor

from eva_mm.registry import MODELS


def load_lvis_image_counts(ann_file: str, num_classes: int) -> List[int]:
    """Read ``categories[*].image_count`` of an LVIS annotation file.

    Args:
        ann_file: Path (or any mmengine file backend URI) of an LVIS-style
            json file, normally the training split's.
        num_classes: Number of categories the file must describe.

    Returns:
        The image count of each category, ordered by category id, which is
        the order of mmdet's LVIS labels.
    """
    categories = load(ann_file).get('categories')
    if not categories or any('image_count' not in c for c in categories):
        raise ValueError(
            f'{ann_file} has no categories[*].image_count. FederatedLoss '
            'needs an LVIS-style annotation file (e.g. lvis_v1_train.json) '
            'or an explicit class_freq list.')
    if len(categories) != num_classes:
        raise ValueError(
            f'{ann_file} has {len(categories)} categories but the loss has '
            f'num_classes={num_classes}; set num_classes to match the file.')
    categories = sorted(categories, key=lambda cat: cat['id'])
    return [cat['image_count'] for cat in categories]


@MODELS.register_module()
class FederatedLoss(nn.Module):
    """Per-class sigmoid cross-entropy restricted to federated classes.

    ``cls_score`` has ``num_classes + 1`` columns as in mmdet's bbox heads,
    the background last. The background column is ignored: a background RoI
    simply has all-zero targets over the foreground classes. On each call,
    the classes of the foreground labels are kept, and further classes are
    drawn without replacement with probability proportional to
    ``class_freq ** freq_weight_power`` until ``num_sampled_classes`` classes
    are kept (or all of them). With ``background_counts`` the background
    label, when the batch has background RoIs, takes one of the
    ``num_sampled_classes`` places, as detectron2's ``get_fed_loss_classes``
    (EVA-01/det/detectron2/modeling/roi_heads/fast_rcnn.py:408-420:
    ``torch.unique`` of the labels includes the background), which thus
    keeps 49 foreground classes where the default keeps 50. The binary
    cross-entropy is summed over the kept classes and the RoIs and divided
    by ``avg_factor`` (the number of RoIs when not given), as detectron2's
    ``sigmoid_cross_entropy_loss`` does.

    The ``custom_*`` flags make mmdet's ``BBoxHead`` ask this loss for the
    number of classifier outputs, the activation (a sigmoid, so predicted
    scores are per-class probabilities) and the accuracy. In a config that
    overrides a base ``CrossEntropyLoss``, replace the dict with
    ``_delete_=True``: its ``use_sigmoid`` is no argument of this loss.

    Args:
        num_classes: Number of foreground classes.
        ann_file: LVIS annotation file to read ``image_count`` from; read on
            first use, so a config builds without the file.
        class_freq: Per-class frequencies (e.g. image counts), instead of
            ``ann_file``.
        num_sampled_classes: Number of classes the loss covers per call
            (present classes included).
        freq_weight_power: Exponent of the frequencies in the sampling
            weights; 0.5 in detectron2 and EVA.
        loss_weight: Weight of the loss.
        background_counts: Count the background among the
            ``num_sampled_classes`` (detectron2, on in the EVA LVIS configs).
    """

    def __init__(self,
                 num_classes: int,
                 ann_file: Optional[str] = None,
                 class_freq: Optional[Sequence[float]] = None,
                 num_sampled_classes: int = 50,
                 freq_weight_power: float = 0.5,
                 loss_weight: float = 1.0,
                 background_counts: bool = False) -> None:
        super().__init__()
        if (ann_file is None) == (class_freq is None):
            raise ValueError(
                'FederatedLoss needs exactly one source of class '
                'frequencies: ann_file (an LVIS annotation file) or '
                'class_freq (a list of num_classes numbers).')
        if num_classes < 1 or num_sampled_classes < 1:
            raise ValueError(
                f'num_classes ({num_classes}) and num_sampled_classes '
                f'({num_sampled_classes}) must be positive.')
        self.num_classes = num_classes
        self.ann_file = ann_file
        self.num_sampled_classes = num_sampled_classes
        self.freq_weight_power = freq_weight_power
        self.loss_weight = loss_weight
        self.background_counts = background_counts
        self.custom_cls_channels = True
        self.custom_activation = True
        self.custom_accuracy = True
        self._sample_weights: Optional[Tensor] = None
        if class_freq is not None:
            self._sample_weights = self._weights_from_freq(class_freq)

    def _weights_from_freq(self, class_freq: Sequence[float]) -> Tensor:
        """Sampling weights ``freq ** power`` after checking the frequencies.

        Args:
            class_freq: One non-negative frequency per class.

        Returns:
            Float tensor of ``num_classes`` weights.
        """
        freq = torch.as_tensor(class_freq, dtype=torch.float)
        if freq.shape != (self.num_classes, ):
            raise ValueError(
                f'class_freq has shape {tuple(freq.shape)}, expected '
                f'({self.num_classes},): one frequency per class.')
        if (freq < 0).any() or not torch.isfinite(freq).all():
            raise ValueError('class_freq must be finite and non-negative.')
        return freq.pow(self.freq_weight_power)

    @property
    def sample_weights(self) -> Tensor:
        """Unnormalised per-class sampling weights, loaded on first use."""
        if self._sample_weights is None:
            self._sample_weights = self._weights_from_freq(
                load_lvis_image_counts(self.ann_file, self.num_classes))
        return self._sample_weights

    def get_cls_channels(self, num_classes: int) -> int:
        """Classifier outputs of the bbox head: the classes and background.

        Args:
            num_classes: The bbox head's number of classes.

        Returns:
            ``num_classes + 1``.
        """
        if num_classes != self.num_classes:
            raise ValueError(
                f'The bbox head has num_classes={num_classes} but its '
                f'FederatedLoss has num_classes={self.num_classes}; set '
                'both to the number of dataset classes.')
        return num_classes + 1

    def get_activation(self, cls_score: Tensor) -> Tensor:
        """Per-class probabilities (the background column stays, ignored).

        Args:
            cls_score: Logits of shape (N, num_classes + 1).

        Returns:
            Sigmoid of the logits, same shape.
        """
        return cls_score.sigmoid()

    def get_accuracy(self, cls_score: Tensor,
                     labels: Tensor) -> Dict[str, Tensor]:
        """Accuracies in percent for the training log.

        A RoI is predicted as its most probable class if that probability
        reaches 0.5 and as background otherwise.

        Args:
            cls_score: Logits of shape (N, num_classes + 1).
            labels: Targets in [0, num_classes], num_classes = background.

        Returns:
            ``acc`` over all RoIs and ``acc_fg``, the arg-max accuracy over
            the foreground RoIs.
        """
        probs = cls_score[:, :self.num_classes].sigmoid()
        top_prob, top_class = probs.max(dim=1)
        pred = torch.where(top_prob >= 0.5, top_class,
                           torch.full_like(top_class, self.num_classes))
        acc = (pred == labels).float().mean() * 100 if len(labels) else \
            cls_score.new_tensor(0.)
        fg = labels < self.num_classes
        acc_fg = accuracy(cls_score[fg, :self.num_classes], labels[fg])
        return dict(acc=acc, acc_fg=acc_fg)

    def sample_classes(self, labels: Tensor) -> Tensor:
        """The classes the loss covers for these labels.

        Args:
            labels: RoI labels in [0, num_classes], num_classes = background.

        Returns:
            Class indices: the present foreground classes (sorted) followed
            by the sampled ones. Classes of weight 0 are never sampled, so
            fewer than ``num_sampled_classes`` come back when too few classes
            have a positive weight.
        """
        present = labels[(labels >= 0) & (labels < self.num_classes)].unique()
        weights = self.sample_weights.to(labels.device).clone()
        weights[present] = 0
        budget = self.num_sampled_classes - len(present)
        if self.background_counts and (labels == self.num_classes).any():
            budget -= 1
        num_draws = min(budget, int((weights > 0).sum()))
        if num_draws <= 0:
            return present
        sampled = torch.multinomial(weights, num_draws, replacement=False)
        return torch.cat([present, sampled])

    def forward(self,
                cls_score: Tensor,
                label: Tensor,
                weight: Optional[Tensor] = None,
                avg_factor: Optional[float] = None,
                reduction_override: Optional[str] = None) -> Tensor:
        """Federated sigmoid cross-entropy.

        Args:
            cls_score: Logits of shape (N, num_classes + 1).
            label: RoI labels of shape (N, ), num_classes = background.
            weight: Per-RoI weights of shape (N, ).
            avg_factor: Divisor of the summed loss; N when None.
            reduction_override: 'none', 'mean' or 'sum' instead of 'mean'.

        Returns:
            The loss: a scalar, or (N, num_classes) with 'none'.
        """
        if cls_score.dim() != 2 or cls_score.size(1) != self.num_classes + 1:
            raise ValueError(
                f'cls_score has shape {tuple(cls_score.shape)}, expected '
                f'(N, {self.num_classes + 1}): num_classes logits and the '
                'background, as get_cls_channels gives the bbox head.')
        reduction = reduction_override or 'mean'
        num_rois = cls_score.size(0)
        if num_rois == 0:
            return cls_score.sum() * 0
        # Background labels index the extra column, which is then dropped.
        target = F.one_hot(label, self.num_classes + 1)[:, :self.num_classes]
        loss = F.binary_cross_entropy_with_logits(
            cls_score[:, :self.num_classes], target.float(), reduction='none')
        class_mask = cls_score.new_zeros(self.num_classes)
        class_mask[self.sample_classes(label)] = 1
        elem_weight = class_mask.expand(num_rois, -1)
        if weight is not None:
            elem_weight = elem_weight * weight.float().view(-1, 1)
        if reduction == 'mean' and avg_factor is None:
            # detectron2 divides by the number of RoIs, not of elements.
            avg_factor = num_rois
        return self.loss_weight * weight_reduce_loss(
            loss, elem_weight, reduction=reduction, avg_factor=avg_factor)
