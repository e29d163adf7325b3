"""Subset accuracy, ReaL accuracy and ImageNet-V2 labels, checked by hand."""
import json
import random
from pathlib import Path
from typing import List, Sequence

import numpy as np
import pytest
import torch
from mmpretrain.datasets import CustomDataset
from mmpretrain.structures import DataSample
from PIL import Image
from timm.data.real_labels import RealLabelsImagenet

from eva_mm.datasets import ImageNetV2
from eva_mm.evaluation import ClassSubsetAccuracy, ReaLAccuracy


def samples(scores: torch.Tensor, labels: Sequence[int],
            paths: Sequence[str] = ()) -> List[dict]:
    """What a classifier's val_step hands to the evaluator."""
    out = []
    for i, (score, label) in enumerate(zip(scores, labels)):
        sample = DataSample().set_pred_score(score).set_gt_label(label)
        if paths:
            sample.set_metainfo(dict(img_path=paths[i]))
        out.append(sample.to_dict())
    return out


def hand_topk(rows: List[List[float]], labels: Sequence[int], k: int) -> float:
    """Percent of rows whose label is among the k largest entries."""
    hits = 0
    for row, label in zip(rows, labels):
        order = sorted(range(len(row)), key=lambda i: -row[i])
        hits += label in order[:k]
    return 100. * hits / len(rows)


def test_200_of_1000_classes_match_hand_computation() -> None:
    rng = random.Random(0)
    # ImageNet-1K style: 1000 WordNet ids; the model's column i is the i-th
    # id in sorted order. The variant keeps 200 of them (its sorted folders).
    superset = sorted(f'n{rng.randrange(10**8):08d}' for _ in range(1000))
    assert len(set(superset)) == 1000
    subset = sorted(rng.sample(superset, 200))
    scores = torch.randn(64, 1000, generator=torch.Generator().manual_seed(0))
    labels = [rng.randrange(200) for _ in range(64)]
    # Make some samples right only within the subset: their overall argmax
    # is a class outside the 200, which must not count as a prediction.
    outside = [i for i, name in enumerate(superset) if name not in subset]
    for row in range(0, 64, 4):
        column = superset.index(subset[labels[row]])
        scores[row, column] = 50.
        scores[row, outside[row]] = 100.

    metric = ClassSubsetAccuracy(superset_classes=superset, topk=(1, 5))
    metric.dataset_meta = dict(classes=tuple(subset))
    metric.process(None, samples(scores, labels))
    result = metric.evaluate(len(labels))

    # Hand: label i of the subset is the model's column of subset[i].
    columns = [superset.index(name) for name in subset]
    rows = [[float(scores[r, c]) for c in columns] for r in range(64)]
    assert result['accuracy/top1'] == pytest.approx(hand_topk(rows, labels, 1))
    assert result['accuracy/top5'] == pytest.approx(hand_topk(rows, labels, 5))
    assert torch.equal(metric.subset_indices, torch.tensor(columns))
    # The forced rows are right within the subset though wrong over all
    # 1000 classes, so the two accuracies differ by at least those 16 rows.
    full = hand_topk(scores.tolist(), [columns[y] for y in labels], 1)
    assert result['accuracy/top1'] >= full + 100. * 16 / 64


def test_superset_from_folder_file_or_indices_agree(tmp_path: Path) -> None:
    names = ['n03', 'n01', 'n05', 'n02', 'n04']
    for name in names:
        (tmp_path / 'train' / name).mkdir(parents=True)
    (tmp_path / 'wnids.txt').write_text(
        '\n'.join(f'{n} some words' for n in sorted(names)) + '\n')
    subset = ('n02', 'n05')
    # Sorted n01..n05: n02 is column 1 and n05 column 4.
    scores = torch.tensor([[0., 3., 9., 1., 2.], [0., 5., 9., 1., 4.],
                           [9., 1., 0., 0., 2.]])
    labels = [0, 1, 1]
    expected = 100. * 2 / 3  # row 0: n02 (3 > 2); row 1: n02, wrong; row 2
    results = []
    for kwargs in (dict(superset_classes=str(tmp_path / 'train')),
                   dict(superset_classes=str(tmp_path / 'wnids.txt')),
                   dict(subset_indices=[1, 4])):
        metric = ClassSubsetAccuracy(**kwargs)
        metric.dataset_meta = dict(classes=subset)
        metric.process(None, samples(scores, labels))
        results.append(metric.evaluate(3)['accuracy/top1'])
    assert results == pytest.approx([expected] * 3)


def test_subset_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match='exactly one'):
        ClassSubsetAccuracy()
    metric = ClassSubsetAccuracy(superset_classes=['a', 'b'])
    metric.dataset_meta = dict(classes=('a', 'z'))
    with pytest.raises(ValueError, match="not among the 2 model classes.*'z'"):
        metric.process(None, samples(torch.zeros(1, 2), [0]))


def test_real_accuracy_matches_hand_computation(tmp_path: Path) -> None:
    real = [[3], [], [0, 2], [1], [4, 3]]
    (tmp_path / 'real.json').write_text(json.dumps(real))
    scores = torch.tensor([
        [0., 1., 2., 9., 3.],  # image 1: top-1 3, in {3}
        [9., 0., 0., 0., 0.],  # image 2: no ReaL label, left out
        [1., 0., 9., 0., 0.],  # image 3: top-1 2, in {0, 2}
        [9., 0., 0., 0., 8.],  # image 4: top-1 0, not in {1}; top-2 {0, 4}
        [0., 0., 9., 8., 0.],  # image 5: top-1 2 wrong; top-2 has 3
    ])
    # Any order of the validation files works: the number in the name.
    order = [4, 0, 3, 1, 2]
    paths = [f'/val/n0/ILSVRC2012_val_{i + 1:08d}.JPEG' for i in order]
    metric = ReaLAccuracy(str(tmp_path / 'real.json'), topk=(1, 2))
    # Labels are unused by ReaL; the original ImageNet label is given.
    metric.process(None, samples(scores[order], [0] * 5, paths))
    result = metric.evaluate(5)
    assert result['real/top1'] == pytest.approx(100. * 2 / 4)
    assert result['real/top2'] == pytest.approx(100. * 3 / 4)



def test_real_accuracy_equals_timm_real_labels(tmp_path: Path) -> None:
    """timm's RealLabelsImagenet (all files, in order, one process) and the
    metric (any order, split into batches) give the same numbers."""
    rng = np.random.default_rng(0)
    real = [sorted(rng.choice(10, size=rng.integers(0, 4), replace=False)
                   .tolist()) for _ in range(40)]
    (tmp_path / 'real.json').write_text(json.dumps(real))
    scores = torch.from_numpy(rng.standard_normal((40, 10))).float()
    names = [f'ILSVRC2012_val_{i + 1:08d}.JPEG' for i in range(40)]
    reference = RealLabelsImagenet(names, str(tmp_path / 'real.json'),
                                   topk=(1, 5))
    reference.add_result(scores)
    metric = ReaLAccuracy(str(tmp_path / 'real.json'), topk=(1, 5))
    order = rng.permutation(40)
    for batch in np.array_split(order, 3):
        metric.process(None, samples(scores[batch], [0] * len(batch),
                                     [f'/val/{names[i]}' for i in batch]))
    result = metric.evaluate(40)
    expected = reference.get_accuracy()
    assert result['real/top1'] == pytest.approx(expected[1])
    assert result['real/top5'] == pytest.approx(expected[5])


def test_real_accuracy_defaults_to_timms_real_json() -> None:
    names = [f'ILSVRC2012_val_{i + 1:08d}.JPEG' for i in range(50000)]
    timm_labels = RealLabelsImagenet(names).real_labels
    metric = ReaLAccuracy()
    assert len(metric.real_labels) == 50000
    assert all(metric.real_labels[i] == timm_labels[name]
               for i, name in enumerate(names))

def test_imagenet_v2_labels_are_the_folder_numbers(tmp_path: Path) -> None:
    pixels = np.zeros((8, 8, 3), np.uint8)
    for folder in ('0', '2', '10', '999'):
        (tmp_path / folder).mkdir()
        Image.fromarray(pixels).save(tmp_path / folder / 'a.png')
    dataset = ImageNetV2(data_root=str(tmp_path), pipeline=[])
    got = {Path(dataset.get_data_info(i)['img_path']).parent.name:
           dataset.get_data_info(i)['gt_label'] for i in range(len(dataset))}
    assert got == {'0': 0, '2': 2, '10': 10, '999': 999}
    assert len(dataset.metainfo['classes']) == 1000
    # What a plain ImageFolder does instead: labels by sorted strings.
    plain = CustomDataset(data_root=str(tmp_path), pipeline=[])
    assert plain.metainfo['classes'] == ('0', '10', '2', '999')
    assert {Path(plain.get_data_info(i)['img_path']).parent.name:
            plain.get_data_info(i)['gt_label']
            for i in range(len(plain))} == {'0': 0, '10': 1, '2': 2, '999': 3}
