"""Repeat factor sampling of the LVIS paper (Gupta et al., arXiv:1908.03195).

An image that contains a rare category is shown more often: for each
category c with f_c the fraction of training images containing it,
r_c = max(1, sqrt(t / f_c)); an image's repeat factor is the largest r_c of
its categories. Each epoch repeats image i floor(r_i) times and once more with
probability r_i - floor(r_i) (stochastic rounding), as detectron2's
``RepeatFactorTrainingSampler`` does, which EVA uses on LVIS with t = 0.001.
"""
import math
from typing import Dict, Iterator, List, Optional, Sized

import torch
from mmengine.dataset import DefaultSampler
from torch import Tensor

from eva_mm.registry import DATA_SAMPLERS


def repeat_factors_from_category_frequency(dataset: Sized,
                                           repeat_thr: float) -> Tensor:
    """Per-image repeat factors from the category frequencies of a dataset.

    Args:
        dataset: A dataset with ``get_cat_ids(idx)`` (mmdet's
            ``BaseDetDataset`` and mmengine's dataset wrappers), which reads
            the annotations without loading images.
        repeat_thr: The threshold t: categories in fewer than this fraction
            of the images are oversampled.

    Returns:
        Float64 tensor of shape (len(dataset), ); images without annotations
        get 1.
    """
    if not hasattr(dataset, 'get_cat_ids'):
        raise TypeError(
            f'{type(dataset).__name__} has no get_cat_ids(idx); '
            'RepeatFactorSampler needs the category ids of each image, as '
            'mmdet detection datasets provide.')
    num_images = len(dataset)
    if num_images == 0:
        raise ValueError('RepeatFactorSampler got an empty dataset.')
    image_cats = [set(dataset.get_cat_ids(idx)) for idx in range(num_images)]
    images_per_cat: Dict[int, int] = {}
    for cats in image_cats:
        for cat in cats:
            images_per_cat[cat] = images_per_cat.get(cat, 0) + 1
    cat_factor = {
        cat: max(1.0, math.sqrt(repeat_thr / (count / num_images)))
        for cat, count in images_per_cat.items()
    }
    image_factor = [
        max((cat_factor[cat] for cat in cats), default=1.0)
        for cats in image_cats
    ]
    return torch.tensor(image_factor, dtype=torch.float64)


@DATA_SAMPLERS.register_module()
class RepeatFactorSampler(DefaultSampler):
    """mmengine's ``DefaultSampler`` over an epoch of repeated images.

    Each epoch (``set_epoch``, which mmengine's loops call, also between
    passes of an iteration-based loop) draws the stochastic rounding and the
    shuffle from a generator seeded with ``seed + epoch``, so every rank
    draws the same epoch and then takes its own stride of it, as
    ``DefaultSampler`` does. The epoch length therefore varies slightly from
    epoch to epoch around the sum of the repeat factors.

    Args:
        dataset: Detection dataset with ``get_cat_ids(idx)``.
        repeat_thr: The LVIS paper's threshold t (EVA / detectron2: 0.001).
        shuffle: Whether to shuffle the repeated indices.
        seed: Random seed shared by all ranks; a synchronised random one
            when None.
        round_up: Pad the epoch to a multiple of the world size.
    """

    def __init__(self,
                 dataset: Sized,
                 repeat_thr: float = 0.001,
                 shuffle: bool = True,
                 seed: Optional[int] = None,
                 round_up: bool = True) -> None:
        if repeat_thr <= 0:
            raise ValueError(f'repeat_thr={repeat_thr} must be positive; '
                             'the LVIS recipe uses 0.001.')
        super().__init__(dataset, shuffle=shuffle, seed=seed,
                         round_up=round_up)
        self.repeat_thr = repeat_thr
        self.repeat_factors = repeat_factors_from_category_frequency(
            dataset, repeat_thr)
        self._drawn_epoch: Optional[int] = None
        self._epoch_indices: List[int] = []

    def epoch_indices(self) -> List[int]:
        """All ranks' indices of the current epoch, before splitting.

        Returns:
            Each image index repeated by its stochastically rounded factor,
            shuffled when ``shuffle``.
        """
        if self._drawn_epoch != self.epoch:
            gen = torch.Generator()
            gen.manual_seed(self.seed + self.epoch)
            whole = self.repeat_factors.floor()
            extra = torch.rand(
                len(whole), generator=gen,
                dtype=torch.float64) < self.repeat_factors - whole
            indices = torch.repeat_interleave(
                torch.arange(len(whole)), (whole + extra).long())
            if self.shuffle:
                indices = indices[torch.randperm(len(indices), generator=gen)]
            self._epoch_indices = indices.tolist()
            self._drawn_epoch = self.epoch
        return self._epoch_indices

    def _update_sizes(self) -> List[int]:
        """Draw the epoch if needed and size it as ``DefaultSampler`` does.

        Returns:
            The current epoch's indices.
        """
        indices = self.epoch_indices()
        if self.round_up:
            self.num_samples = math.ceil(len(indices) / self.world_size)
            self.total_size = self.num_samples * self.world_size
        else:
            self.num_samples = math.ceil(
                (len(indices) - self.rank) / self.world_size)
            self.total_size = len(indices)
        return indices

    def __iter__(self) -> Iterator[int]:
        """This rank's indices of the current epoch."""
        indices = self._update_sizes()
        if self.round_up:
            copies = self.total_size // len(indices) + 1
            indices = (indices * copies)[:self.total_size]
        return iter(indices[self.rank:self.total_size:self.world_size])

    def __len__(self) -> int:
        """The number of this rank's indices in the current epoch."""
        self._update_sizes()
        return self.num_samples
