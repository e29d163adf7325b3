"""eva_mm.RepeatFactorSampler on a tiny COCO-format set read by mmdet."""
import json
import math
from collections import Counter
from typing import List

import pytest
import torch
from mmdet.datasets import CocoDataset
from mmengine.runner import Runner
from mmengine.runner.loops import _InfiniteDataloaderIterator

import eva_mm  # noqa: F401  (registers eva_mm.* in the mmengine registries)
from eva_mm.datasets import (RepeatFactorSampler,
                             repeat_factors_from_category_frequency)

# Categories of the 10 images: 'a' in 1 of them, 'b' in 4, 'c' in 7; the
# last image has no annotation.
IMAGE_CATEGORIES = [[1, 2], [2], [2, 3], [2, 3], [3], [3], [3], [3], [3], []]
THR = 0.5
# r_c = max(1, sqrt(t / f_c)): a: sqrt(0.5 / 0.1), b: sqrt(0.5 / 0.4),
# c: sqrt(0.5 / 0.7) < 1 -> 1; an image takes its largest r_c, 1 if empty.
R_A, R_B = math.sqrt(5.0), math.sqrt(1.25)
EXPECTED_FACTORS = [R_A, R_B, R_B, R_B, 1, 1, 1, 1, 1, 1]


@pytest.fixture(scope='module')
def dataset(tmp_path_factory: pytest.TempPathFactory) -> CocoDataset:
    """mmdet's CocoDataset over annotations only (images are never read)."""
    root = tmp_path_factory.mktemp('rfs')
    images, annotations = [], []
    for idx, cats in enumerate(IMAGE_CATEGORIES):
        images.append(
            dict(id=100 + idx, file_name=f'{idx}.jpg', width=32, height=32))
        for cat in cats:
            annotations.append(
                dict(id=len(annotations) + 1, image_id=100 + idx,
                     category_id=cat, bbox=[2, 2, 10, 10], area=100,
                     iscrowd=0))
    categories = [dict(id=i, name=n) for i, n in ((1, 'a'), (2, 'b'),
                                                  (3, 'c'))]
    ann_file = root / 'train.json'
    ann_file.write_text(
        json.dumps(dict(images=images, annotations=annotations,
                        categories=categories)))
    return CocoDataset(
        ann_file=str(ann_file), data_root=str(root),
        data_prefix=dict(img='images'),
        metainfo=dict(classes=('a', 'b', 'c')), pipeline=[])


def test_repeat_factors_match_hand_computation(dataset: CocoDataset) -> None:
    factors = repeat_factors_from_category_frequency(dataset, THR)
    assert factors.tolist() == pytest.approx(EXPECTED_FACTORS, rel=1e-12)
    # The LVIS threshold leaves this frequent-only set unrepeated.
    assert (repeat_factors_from_category_frequency(dataset, 0.001) == 1).all()


def test_stochastic_rounding_per_epoch(dataset: CocoDataset) -> None:
    sampler = RepeatFactorSampler(dataset, repeat_thr=THR, seed=7)
    epochs = 2000
    lengths: List[int] = []
    third_copy_of_0 = second_copy_of_1 = 0
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        indices = list(sampler)
        assert len(sampler) == len(indices)
        counts = Counter(indices)
        assert counts[0] in (2, 3) and counts[1] in (1, 2)
        assert all(counts[i] == 1 for i in range(4, 10))
        third_copy_of_0 += counts[0] == 3
        second_copy_of_1 += counts[1] == 2
        lengths.append(len(indices))
    # Image i gets its extra copy with probability r_i - floor(r_i).
    for hits, prob in ((third_copy_of_0, R_A - 2), (second_copy_of_1,
                                                    R_B - 1)):
        sigma = math.sqrt(prob * (1 - prob) / epochs)
        assert abs(hits / epochs - prob) < 5 * sigma
    # The expected epoch length is the sum of the repeat factors.
    extra_var = (R_A - 2) * (3 - R_A) + 3 * (R_B - 1) * (2 - R_B)
    mean = sum(lengths) / epochs
    assert abs(mean - sum(EXPECTED_FACTORS)) < 5 * math.sqrt(extra_var /
                                                             epochs)


def test_epochs_are_deterministic_and_differ(dataset: CocoDataset) -> None:
    first = RepeatFactorSampler(dataset, repeat_thr=THR, seed=3)
    again = RepeatFactorSampler(dataset, repeat_thr=THR, seed=3)
    epoch0 = list(first)
    assert epoch0 == list(again)
    first.set_epoch(1)
    assert list(first) != epoch0
    first.set_epoch(0)
    assert list(first) == epoch0
    other_seed = RepeatFactorSampler(dataset, repeat_thr=THR, seed=4)
    assert list(other_seed) != epoch0
    ordered = RepeatFactorSampler(
        dataset, repeat_thr=THR, seed=3, shuffle=False)
    assert list(ordered) == sorted(ordered)


@pytest.mark.parametrize('round_up', [False, True])
def test_ranks_share_the_epoch_disjointly(dataset: CocoDataset,
                                          round_up: bool) -> None:
    world_size = 3
    ranks = []
    for rank in range(world_size):
        sampler = RepeatFactorSampler(dataset, repeat_thr=THR, seed=5,
                                      round_up=round_up)
        # One process stands in for each rank of a 3-process group.
        sampler.rank, sampler.world_size = rank, world_size
        ranks.append(sampler)
    epoch = ranks[0].epoch_indices()
    per_rank = [list(sampler) for sampler in ranks]
    assert [len(s) for s in ranks] == [len(p) for p in per_rank]
    # Position k of the epoch goes to rank k % world_size, and only there.
    merged = [per_rank[k % world_size][k // world_size]
              for k in range(len(epoch))]
    assert merged == epoch
    if round_up:
        assert len({len(p) for p in per_rank}) == 1
        padded = math.ceil(len(epoch) / world_size) * world_size
        assert sum(map(len, per_rank)) == padded
    else:
        assert sum(map(len, per_rank)) == len(epoch)


def test_infinite_loader_redraws_each_pass(dataset: CocoDataset) -> None:
    loader = Runner.build_dataloader(
        dict(
            batch_size=1,
            num_workers=0,
            dataset=dataset,
            sampler=dict(type='eva_mm.RepeatFactorSampler', repeat_thr=THR),
            collate_fn=dict(type='pseudo_collate')),
        seed=11)
    sampler = loader.sampler
    assert isinstance(sampler, RepeatFactorSampler) and sampler.seed == 11
    img_ids = [dataset.get_data_info(i)['img_id'] for i in range(10)]
    expected = []
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        expected += [img_ids[i] for i in sampler.epoch_indices()]
    sampler.set_epoch(0)
    # What IterBasedTrainLoop iterates: set_epoch(1) when pass 0 runs out.
    batches = _InfiniteDataloaderIterator(loader)
    seen = [next(batches)['img_id'][0] for _ in range(len(expected))]
    assert sampler.epoch == 1
    assert seen == expected


def test_bad_input_is_refused(dataset: CocoDataset) -> None:
    with pytest.raises(ValueError, match='repeat_thr'):
        RepeatFactorSampler(dataset, repeat_thr=0)
    with pytest.raises(TypeError, match='get_cat_ids'):
        RepeatFactorSampler(list(range(4)), repeat_thr=THR)
    assert torch.equal(
        RepeatFactorSampler(dataset, repeat_thr=THR).repeat_factors,
        repeat_factors_from_category_frequency(dataset, THR))
