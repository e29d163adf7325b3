"""Metrics for the ImageNet-1K robustness variants that EVA reports.

ImageNet-A and ImageNet-R hold 200 of the 1000 ImageNet-1K classes: a
1000-way classifier is scored on its logits of those 200 classes only
(:class:`ClassSubsetAccuracy`). ImageNet-ReaL re-labels the ImageNet-1K
validation images with sets of plausible labels (:class:`ReaLAccuracy`).
ImageNet-V2 and ImageNet-Sketch need no metric of their own.
"""
import json
import os
import pkgutil
import re
from typing import Dict, List, Optional, Sequence, Union

import torch
from mmpretrain.evaluation import Accuracy

from eva_mm.registry import METRICS

_VAL_INDEX = re.compile(r'(\d+)\.[A-Za-z]+$')


def _read_classes(source: Union[str, Sequence[str]]) -> List[str]:
    """Class names in label order from a list, a text file or a folder."""
    if not isinstance(source, str):
        return [str(name) for name in source]
    if os.path.isdir(source):
        # An ImageFolder root (e.g. ImageNet-1K train/): labels follow the
        # sorted sub-folder names, as in mmpretrain's CustomDataset.
        return sorted(entry.name for entry in os.scandir(source)
                      if entry.is_dir())
    with open(source) as f:
        # One class per line; extra columns (e.g. 'n01440764 tench') ignored.
        return [line.split()[0] for line in f if line.strip()]


@METRICS.register_module()
class ClassSubsetAccuracy(Accuracy):
    """Top-k accuracy over a subset of a classifier's classes.

    ImageNet-A and ImageNet-R keep 200 ImageNet-1K classes, stored as
    ImageFolder sets whose labels 0..199 follow their sorted WordNet-id
    folders. The 1000-way scores are cut down to the columns of those 200
    classes (in the subset's label order) before top-k is taken, as the
    official EVA evaluation does; argmax over all 1000 classes would count
    predictions of classes that are not in the set.

    The subset is given either directly as ``subset_indices`` (column ``i`` of
    the model is label ``subset_indices.index(i)``) or by names: the subset's
    class names come from the dataset's ``metainfo['classes']`` (the folder
    names of a CustomDataset) and are looked up in ``superset_classes``, the
    model's classes in output order.

    Args:
        subset_indices: Model output column of each subset label.
        superset_classes: The model's class names in output order: a list, a
            text file with one name per line, or an ImageFolder root (e.g.
            ImageNet-1K ``train/``) whose sorted sub-folders are the classes.
        topk: The k of top-k accuracy.
        thrs: Score thresholds, as in mmpretrain's ``Accuracy``.
        collect_device: Device to gather results on across processes.
        prefix: Metric name prefix; ``None`` keeps ``'accuracy'``.

    Raises:
        ValueError: If neither or both of ``subset_indices`` and
            ``superset_classes`` are given.
    """

    def __init__(self,
                 subset_indices: Optional[Sequence[int]] = None,
                 superset_classes: Optional[Union[str, Sequence[str]]] = None,
                 topk: Union[int, Sequence[int]] = (1, ),
                 thrs: Union[float, Sequence[Optional[float]], None] = 0.,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(
            topk=topk, thrs=thrs, collect_device=collect_device,
            prefix=prefix)
        if (subset_indices is None) == (superset_classes is None):
            raise ValueError('Give exactly one of subset_indices and '
                             'superset_classes.')
        self.superset_classes = superset_classes
        self._indices: Optional[torch.Tensor] = None
        if subset_indices is not None:
            self._indices = torch.as_tensor(list(subset_indices),
                                            dtype=torch.long)

    @property
    def subset_indices(self) -> torch.Tensor:
        """The model output column of each subset label."""
        if self._indices is None:
            self._indices = self._indices_from_names()
        return self._indices

    def _indices_from_names(self) -> torch.Tensor:
        subset = (self.dataset_meta or {}).get('classes')
        if not subset:
            raise ValueError(
                'ClassSubsetAccuracy with superset_classes needs the '
                "dataset's class names (dataset_meta['classes']); use a "
                'dataset that sets them, e.g. CustomDataset on a folder per '
                'class, or give subset_indices.')
        superset = _read_classes(self.superset_classes)
        column = {name: i for i, name in enumerate(superset)}
        unknown = [name for name in subset if name not in column]
        if unknown:
            raise ValueError(
                f'{len(unknown)} of the {len(subset)} dataset classes are not '
                f'among the {len(superset)} model classes, e.g. '
                f'{unknown[:5]}.')
        return torch.tensor([column[name] for name in subset],
                            dtype=torch.long)

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        """Keep each sample's scores of the subset columns and its label.

        Args:
            data_batch: The batch from the dataloader (unused).
            data_samples: The model outputs, with ``pred_score`` over all
                model classes and ``gt_label`` in subset label space.
        """
        indices = self.subset_indices
        for data_sample in data_samples:
            if 'pred_score' not in data_sample:
                raise ValueError('ClassSubsetAccuracy needs pred_score: '
                                 'labels alone cannot be restricted.')
            scores = data_sample['pred_score'].cpu()
            if indices.max() >= scores.numel():
                raise ValueError(
                    f'Subset column {int(indices.max())} is outside the '
                    f'{scores.numel()} model scores.')
            gt_label = data_sample['gt_label'].cpu()
            if gt_label.max() >= indices.numel():
                raise ValueError(
                    f'Label {int(gt_label.max())} is outside the '
                    f'{indices.numel()}-class subset.')
            self.results.append(
                dict(pred_score=scores[indices], gt_label=gt_label))


@METRICS.register_module()
class ReaLAccuracy(Accuracy):
    """Top-k accuracy against the ImageNet-ReaL labels (Beyer et al., 2020).

    ReaL gives every ImageNet-1K validation image a set of plausible labels
    (``real.json``: a list, in validation-file order, of label lists). A
    prediction counts as correct when any of its top k classes is in the
    image's set; images with an empty set are left out, as in the ReaL
    reference code and timm. The image is found by the number in its file
    name (``ILSVRC2012_val_00000001.JPEG`` is entry 0), so any order or
    subset of the validation images works.

    The rule is timm's ``RealLabelsImagenet`` (timm/data/real_labels.py);
    that class is not used itself because it needs the list of all 50,000
    validation files in loader order and counts inside one process, while
    an mmengine metric receives any subset in any order and gathers results
    across ranks. Without a path it reads the ``real.json`` timm ships
    (timm/data/_info/imagenet_real_labels.json), as ``RealLabelsImagenet``
    does.

    Args:
        real_labels: Path of ``real.json``; ``None`` for timm's copy.
        topk: The k of top-k accuracy.
        collect_device: Device to gather results on across processes.
        prefix: Metric name prefix; ``None`` gives ``'real'``.
    """

    default_prefix: Optional[str] = 'real'

    def __init__(self,
                 real_labels: Optional[str] = None,
                 topk: Union[int, Sequence[int]] = (1, 5),
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(
            topk=topk, collect_device=collect_device, prefix=prefix)
        if real_labels is None:
            text = pkgutil.get_data('timm.data',
                                    '_info/imagenet_real_labels.json')
        else:
            with open(real_labels, 'rb') as f:
                text = f.read()
        self.real_labels: List[List[int]] = json.loads(text)

    def _labels_of(self, img_path: str) -> List[int]:
        match = _VAL_INDEX.search(os.path.basename(img_path))
        if match is None:
            raise ValueError(
                f'Cannot read the validation index from {img_path!r}: '
                'ReaL needs the original ILSVRC2012_val_XXXXXXXX file names.')
        index = int(match.group(1)) - 1
        if not 0 <= index < len(self.real_labels):
            raise ValueError(f'{img_path!r} is image {index + 1}, but the '
                             f'ReaL file has {len(self.real_labels)}.')
        return self.real_labels[index]

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        """Record, per k, whether a top-k class is a ReaL label.

        Args:
            data_batch: The batch from the dataloader (unused).
            data_samples: The model outputs with ``pred_score`` and the
                ``img_path`` meta key (kept by mmpretrain's ``PackInputs``).
        """
        max_k = max(self.topk)
        for data_sample in data_samples:
            labels = self._labels_of(data_sample['img_path'])
            if not labels:
                continue
            top = data_sample['pred_score'].topk(max_k).indices.tolist()
            self.results.append({
                k: any(label in labels for label in top[:k])
                for k in self.topk
            })

    def compute_metrics(self, results: List[Dict[int, bool]]) -> dict:
        """Percent of the labelled images with a ReaL label in the top k.

        Args:
            results: Per image, k -> whether a top-k class is correct.

        Returns:
            ``{'top1': ..., 'top5': ...}`` in percent.
        """
        if not results:
            raise ValueError('No evaluated image has a ReaL label.')
        return {
            f'top{k}': 100. * sum(r[k] for r in results) / len(results)
            for k in self.topk
        }
