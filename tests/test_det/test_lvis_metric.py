"""eva_mm.LVISMetric against the official ``lvis`` 0.5.3 evaluator.

A tiny generated LVIS v1-format set (5 images, 10 categories of frequency
r/c/f, polygon masks of small, medium and large area, negative and
not-exhaustive categories per image) and crafted predictions: true
positives, duplicates, wrong classes, detections of negative,
not-exhaustive and unannotated categories, and one image with more than 300
detections whose lowest-scoring true positives fall past the limit. Every
number must equal the reference evaluator's to 1e-4, for boxes and masks.

The reference is the real ``lvis`` package (requirements/tests.txt): it
fails on NumPy 2 only by its use of the removed ``np.float`` alias, which
the reference fixture restores in this process.
"""
import copy
import json
import os.path as osp
import subprocess
import sys
import tempfile
from typing import Dict, List, Tuple

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
from mmdet.datasets import LVISV1Dataset as MMDetLVISV1Dataset
from mmdet.structures import DetDataSample
from mmengine.evaluator import Evaluator
from mmengine.registry import DATASETS, METRICS
from mmengine.structures import InstanceData
from pycocotools.coco import COCO as PyCOCO
from pycocotools.cocoeval import COCOeval as PyCOCOeval

import eva_mm  # noqa: F401  (registers eva_mm.* in the mmengine registries)
from eva_mm.evaluation.metrics.lvis_metric import limit_dets_per_image

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
FREQUENCIES = ['r', 'r', 'r', 'c', 'c', 'c', 'f', 'f', 'f', 'f']
CLASSES = tuple(f'thing_{i}' for i in range(1, 11))
# (image id, height, width): ids neither contiguous nor sorted by size.
IMAGES = [(12, 240, 320), (3, 200, 200), (27, 160, 240), (8, 256, 256),
          (40, 120, 160)]
# Polygon radii giving small (< 32^2), medium and large (> 96^2) areas.
RADII = {'s': (5, 14), 'm': (22, 44), 'l': (62, 90)}
LVIS_ITEMS = ['AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'APr', 'APc', 'APf',
              'AR@300', 'ARs@300', 'ARm@300', 'ARl@300']
# Predictions are (category id, [x1, y1, x2, y2], score, mask).
Prediction = Tuple[int, List[float], float, np.ndarray]


def _polygon(rng: np.random.Generator, height: int, width: int,
             size: str) -> List[float]:
    """A random star-shaped 7-gon inside the image."""
    radius = rng.uniform(*RADII[size])
    cx = rng.uniform(radius, max(radius + 1, width - radius))
    cy = rng.uniform(radius, max(radius + 1, height - radius))
    angles = np.sort(rng.uniform(0, 2 * np.pi, 7))
    radii = radius * rng.uniform(0.6, 1.0, 7)
    xs = np.clip(np.round(cx + radii * np.cos(angles)), 0, width - 1)
    ys = np.clip(np.round(cy + radii * np.sin(angles)), 0, height - 1)
    return np.stack([xs, ys], 1).ravel().tolist()


def _rle(polygon: List[float], height: int, width: int) -> dict:
    return mask_utils.merge(mask_utils.frPyObjects([polygon], height, width))


def _make_lvis_set(rng: np.random.Generator) -> dict:
    """LVIS v1-format ground truth with federated labels per image."""
    categories = [
        dict(id=i + 1, name=name, frequency=FREQUENCIES[i],
             synset=f'{name}.n.01', image_count=1, instance_count=1)
        for i, name in enumerate(CLASSES)
    ]
    images, annotations = [], []
    sizes = ['s', 'm', 'l']
    for img_id, height, width in IMAGES:
        cats = rng.permutation(np.arange(1, 11))
        positives = sorted(int(c) for c in cats[:4])
        images.append(dict(
            id=img_id, height=height, width=width,
            coco_url=('http://images.cocodataset.org/val2017/'
                      f'{img_id:012d}.jpg'),
            neg_category_ids=sorted(int(c) for c in cats[4:6]),
            # One annotated category is marked not exhaustively labelled.
            not_exhaustive_category_ids=[positives[0]]))
        for cat_id in positives:
            for _ in range(int(rng.integers(1, 4))):
                polygon = _polygon(rng, height, width,
                                   sizes[len(annotations) % 3])
                rle = _rle(polygon, height, width)
                x, y, w, h = mask_utils.toBbox(rle).tolist()
                annotations.append(dict(
                    id=len(annotations) + 1, image_id=img_id,
                    category_id=cat_id, segmentation=[polygon],
                    bbox=[x, y, w, h], area=float(mask_utils.area(rle))))
    return dict(images=images, annotations=annotations,
                categories=categories, info={}, licenses=[])


def _box_mask(box: List[float], height: int, width: int) -> np.ndarray:
    x1, y1, x2, y2 = (int(v) for v in box)
    mask = np.zeros((height, width), dtype=bool)
    mask[y1:y2, x1:x2] = True
    return mask


def _shifted(ann: dict, dx: int, dy: int, height: int,
             width: int) -> Tuple[List[float], np.ndarray]:
    """The annotation's box and mask moved by (dx, dy) pixels."""
    polygon = np.array(ann['segmentation'][0]).reshape(-1, 2) + (dx, dy)
    polygon[:, 0] = np.clip(polygon[:, 0], 0, width - 1)
    polygon[:, 1] = np.clip(polygon[:, 1], 0, height - 1)
    rle = _rle(polygon.ravel().tolist(), height, width)
    mask = mask_utils.decode(rle).astype(bool)
    x, y, w, h = mask_utils.toBbox(rle).tolist()
    return [x, y, x + w, y + h], mask


def _random_box(rng: np.random.Generator, height: int,
                width: int) -> List[float]:
    w, h = rng.integers(4, width // 2), rng.integers(4, height // 2)
    x, y = rng.integers(0, width - w), rng.integers(0, height - h)
    return [float(x), float(y), float(x + w), float(y + h)]


def _make_predictions(rng: np.random.Generator,
                      gt: dict) -> Dict[int, List[Prediction]]:
    """Crafted detections of every kind the federated rules treat apart."""
    preds: Dict[int, List[Prediction]] = {}
    for img in gt['images']:
        img_id, height, width = img['id'], img['height'], img['width']
        anns = [a for a in gt['annotations'] if a['image_id'] == img_id]
        positives = sorted({a['category_id'] for a in anns})
        negatives = img['neg_category_ids']
        unannotated = [c for c in range(1, 11)
                       if c not in positives and c not in negatives]
        dets: List[Prediction] = []

        def add(cat_id: int, box: List[float], score: float,
                mask: np.ndarray = None) -> None:
            if mask is None:
                mask = _box_mask(box, height, width)
            dets.append((cat_id, box, float(np.float32(score)), mask))

        for ann in anns:
            if rng.random() < 0.85:  # true positive, a few pixels off
                box, mask = _shifted(ann, *rng.integers(-2, 3, 2), height,
                                     width)
                add(ann['category_id'], box, rng.uniform(0.3, 1.0), mask)
            if rng.random() < 0.4:  # duplicate, lower score
                box, mask = _shifted(ann, *rng.integers(-4, 5, 2), height,
                                     width)
                add(ann['category_id'], box, rng.uniform(0.05, 0.5), mask)
            # Right place, wrong class: a negative one (a false positive)
            # and an unannotated one (dropped from evaluation).
            box, mask = _shifted(ann, 0, 0, height, width)
            add(int(rng.choice(negatives)), box, rng.uniform(0, 1), mask)
            add(int(rng.choice(unannotated)), box, rng.uniform(0, 1), mask)
        for _ in range(6):  # background boxes of every kind of category
            for cat_id in (rng.choice(negatives), positives[0],
                           rng.choice(positives), rng.choice(unannotated)):
                add(int(cat_id), _random_box(rng, height, width),
                    rng.uniform(0, 1))
        if img_id == 8:
            # Past LVIS's 300-per-image limit: 300 confident false
            # positives push the image's low-scoring true positives out.
            for _ in range(300):
                add(int(rng.choice(positives[1:] + negatives)),
                    _random_box(rng, height, width), rng.uniform(0.6, 0.99))
            for ann in anns:
                box, mask = _shifted(ann, 0, 0, height, width)
                add(ann['category_id'], box, rng.uniform(0.01, 0.05), mask)
        preds[img_id] = dets
    return preds


def _data_sample(img: dict, dets: List[Prediction]) -> DetDataSample:
    """The mmdet data sample a detector would give for these detections."""
    sample = DetDataSample(metainfo=dict(
        img_id=img['id'], ori_shape=(img['height'], img['width'])))
    sample.pred_instances = InstanceData(
        bboxes=torch.tensor([d[1] for d in dets], dtype=torch.float32),
        scores=torch.tensor([d[2] for d in dets], dtype=torch.float32),
        labels=torch.tensor([d[0] - 1 for d in dets]),
        masks=torch.from_numpy(np.stack([d[3] for d in dets])))
    return sample


def _json_results(preds: Dict[int, List[Prediction]],
                  with_masks: bool) -> List[dict]:
    """The COCO-style result list mmdet's metrics write for the detections."""
    results = []
    for img_id, dets in preds.items():
        for cat_id, (x1, y1, x2, y2), score, mask in dets:
            result = dict(image_id=img_id, category_id=cat_id,
                          bbox=[x1, y1, x2 - x1, y2 - y1], score=score)
            if with_masks:
                rle = mask_utils.encode(np.asfortranarray(mask, np.uint8))
                rle['counts'] = rle['counts'].decode()
                result['segmentation'] = rle
            results.append(result)
    return results


@pytest.fixture(scope='module')
def lvis_case(tmp_path_factory: pytest.TempPathFactory
              ) -> Tuple[str, dict, Dict[int, List[Prediction]]]:
    rng = np.random.default_rng(4)
    gt = _make_lvis_set(rng)
    preds = _make_predictions(rng, gt)
    path = str(tmp_path_factory.mktemp('lvis') / 'lvis_v1_tiny.json')
    with open(path, 'w') as f:
        json.dump(gt, f)
    return path, gt, preds


@pytest.fixture(scope='module')
def lvis_reference():
    """The official evaluator, with NumPy's removed ``np.float`` restored."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(np, 'float', float, raising=False)
        from lvis import LVIS, LVISEval, LVISResults

        def evaluate(gt_path: str, results: List[dict], iou_type: str,
                     max_dets: int = 300) -> Dict[str, float]:
            """LVIS's results plus '<category name>_precision' (the AP of
            each category over all areas, as mmdet's classwise option)."""
            lvis_gt = LVIS(gt_path)
            lvis_eval = LVISEval(
                lvis_gt,
                LVISResults(lvis_gt, copy.deepcopy(results), max_dets),
                iou_type)
            lvis_eval.params.max_dets = max_dets
            lvis_eval.run()
            values = {k: float(v) for k, v in lvis_eval.get_results().items()}
            for idx, cat_id in enumerate(lvis_eval.params.cat_ids):
                precision = lvis_eval.eval['precision'][:, :, idx, 0]
                name = lvis_gt.cats[cat_id]['name']
                precision = precision[precision > -1]
                values[f'{name}_precision'] = (
                    float(precision.mean()) if precision.size else np.nan)
            return values

        yield evaluate


@pytest.fixture(scope='module')
def metric_results(lvis_case) -> Dict[str, float]:
    """eva_mm.LVISMetric through mmengine's Evaluator, as a Runner calls it."""
    path, gt, preds = lvis_case
    evaluator = Evaluator(METRICS.build(dict(
        type='eva_mm.LVISMetric', ann_file=path, metric=['bbox', 'segm'],
        metric_items=LVIS_ITEMS, classwise=True)))
    evaluator.dataset_meta = dict(classes=CLASSES)
    images = gt['images']
    for batch in (images[:2], images[2:]):
        evaluator.process([_data_sample(img, preds[img['id']])
                           for img in batch])
    return evaluator.evaluate(len(images))


@pytest.mark.parametrize('iou_type', ['bbox', 'segm'])
def test_equals_lvis_reference(lvis_case, lvis_reference, metric_results,
                               iou_type: str) -> None:
    path, _, preds = lvis_case
    reference = lvis_reference(path, _json_results(preds, iou_type == 'segm'),
                               iou_type)
    per_category = {f'{name}_precision' for name in CLASSES}
    assert set(reference) == set(LVIS_ITEMS) | per_category
    ours = {k: metric_results[f'lvis/{iou_type}_{k}'] for k in LVIS_ITEMS}
    assert ours == pytest.approx(
        {k: reference[k] for k in LVIS_ITEMS}, abs=1e-4)
    # classwise: mmdet names the per-category APs without the iou type, so
    # the segm ones replace the bbox ones in the results.
    if iou_type == 'segm':
        assert {k: metric_results[f'lvis/{k}'] for k in per_category
                } == pytest.approx(
                    {k: reference[k] for k in per_category}, abs=1e-4,
                    nan_ok=True)  # a category without annotations is nan
    # The crafted case is not degenerate: every group is scored, imperfectly.
    assert all(0.05 < ours[k] < 0.95 for k in LVIS_ITEMS)


def test_larger_budget_equals_lvis_reference(lvis_case,
                                             lvis_reference) -> None:
    """EVA's 1536 px test budget: 1000 detections per image."""
    path, gt, preds = lvis_case
    metric = METRICS.build(dict(type='eva_mm.LVISMetric', ann_file=path,
                                metric='bbox', max_dets_per_image=1000,
                                metric_items=['AP', 'APr', 'AR@1000']))
    metric.dataset_meta = dict(classes=CLASSES)
    metric.process({}, [_data_sample(img, preds[img['id']]).to_dict()
                        for img in gt['images']])
    ours = metric.evaluate(len(gt['images']))
    reference = lvis_reference(path, _json_results(preds, False), 'bbox',
                               max_dets=1000)
    assert ours == pytest.approx(
        {f'lvis/bbox_{k}': reference[k]
         for k in ('AP', 'APr', 'AR@1000')}, abs=1e-4)
    # Image 8's detections beyond the top 300 now count.
    default = lvis_reference(path, _json_results(preds, False), 'bbox')
    assert abs(reference['AP'] - default['AP']) > 1e-4


def test_default_items_and_perfect_predictions(lvis_case) -> None:
    """Ground truth as predictions scores 1 on every LVIS AP."""
    path, gt, _ = lvis_case
    metric = METRICS.build(dict(type='eva_mm.LVISMetric', ann_file=path,
                                metric='bbox'))
    metric.dataset_meta = dict(classes=CLASSES)
    samples = []
    for img in gt['images']:
        anns = [a for a in gt['annotations'] if a['image_id'] == img['id']]
        dets = [(a['category_id'], [a['bbox'][0], a['bbox'][1],
                                    a['bbox'][0] + a['bbox'][2],
                                    a['bbox'][1] + a['bbox'][3]], 0.9,
                 np.zeros((1, 1), bool)) for a in anns]
        sample = _data_sample(img, dets).to_dict()
        del sample['pred_instances']['masks']
        samples.append(sample)
    metric.process({}, samples)
    results = metric.evaluate(len(samples))
    assert list(results) == [f'lvis/bbox_{k}' for k in LVIS_ITEMS[:9]]
    assert all(v == pytest.approx(1.0) for v in results.values())


def test_limit_dets_per_image_equals_lvis_results(lvis_case,
                                                  lvis_reference) -> None:
    """Top 300 per image: same detections, same order as LVISResults."""
    from lvis import LVIS, LVISResults

    path, _, preds = lvis_case
    results = _json_results(preds, with_masks=False)
    assert len(preds[8]) > 300
    reference = LVISResults(LVIS(path), copy.deepcopy(results))
    kept = limit_dets_per_image(copy.deepcopy(results), 300)
    assert [(a['image_id'], a['category_id'], a['bbox'], a['score'])
            for a in kept] == [
        (a['image_id'], a['category_id'], a['bbox'], a['score'])
        for a in reference.dataset['annotations']]
    assert sum(a['image_id'] == 8 for a in kept) == 300


def test_proposal_recall_equals_pycocotools(lvis_case, tmp_path) -> None:
    """'proposal' is class-agnostic COCO recall at each proposal number."""
    path, gt, preds = lvis_case
    metric = METRICS.build(dict(type='eva_mm.LVISMetric', ann_file=path,
                                metric='proposal', proposal_nums=(10, 100)))
    metric.dataset_meta = dict(classes=CLASSES)
    metric.process({}, [_data_sample(img, preds[img['id']]).to_dict()
                        for img in gt['images']])
    ours = metric.evaluate(len(gt['images']))

    coco_gt = copy.deepcopy(gt)
    for ann in coco_gt['annotations']:
        ann['iscrowd'] = 0  # pycocotools needs the COCO field
    coco_path = str(tmp_path / 'coco_gt.json')
    with open(coco_path, 'w') as f:
        json.dump(coco_gt, f)
    api = PyCOCO(coco_path)
    coco_eval = PyCOCOeval(
        api, api.loadRes(_json_results(preds, with_masks=False)), 'bbox')
    coco_eval.params.useCats = 0
    coco_eval.params.maxDets = [10, 100]
    coco_eval.evaluate()
    coco_eval.accumulate()
    recall = coco_eval.eval['recall']  # [iou, category, area, max dets]
    for m, num in enumerate((10, 100)):
        for a, area in enumerate(['', 's', 'm', 'l']):
            expected = recall[:, :, a, m]
            assert ours[f'lvis/AR{area}@{num}'] == pytest.approx(
                expected[expected > -1].mean(), abs=1e-4)


def test_federated_rules_change_the_numbers(lvis_case,
                                            metric_results) -> None:
    """Scored as plain COCO (no federated rules) the same case differs."""
    from faster_coco_eval import COCO, COCOeval_faster

    path, _, preds = lvis_case
    api = COCO(path)
    coco_eval = COCOeval_faster(
        api, api.loadRes(_json_results(preds, with_masks=False)), 'bbox')
    coco_eval.params.maxDets = [300]
    coco_eval.run()
    assert abs(coco_eval.stats_as_dict['AP_all'] -
               metric_results['lvis/bbox_AP']) > 0.02


def test_bad_input_errors(lvis_case, tmp_path) -> None:
    path, gt, _ = lvis_case
    with pytest.raises(ValueError, match='needs ann_file'):
        METRICS.build(dict(type='eva_mm.LVISMetric', metric='bbox'))
    with pytest.raises(KeyError, match="Use metric='proposal'"):
        METRICS.build(dict(type='eva_mm.LVISMetric', ann_file=path,
                           metric=['bbox', 'proposal_fast']))
    coco_like = copy.deepcopy(gt)
    for img in coco_like['images']:
        del img['neg_category_ids']
    bad_path = str(tmp_path / 'coco_like.json')
    with open(bad_path, 'w') as f:
        json.dump(coco_like, f)
    with pytest.raises(ValueError, match="no 'neg_category_ids'"):
        METRICS.build(dict(type='eva_mm.LVISMetric', ann_file=bad_path))
    metric = METRICS.build(dict(type='eva_mm.LVISMetric', ann_file=path))
    metric.dataset_meta = dict(classes=CLASSES + ('not_in_file', ))
    metric.process({}, [_data_sample(gt['images'][0], [
        (1, [0., 0., 8., 8.], 0.5, np.zeros((1, 1), bool))]).to_dict()])
    with pytest.raises(ValueError, match='not_in_file'):
        metric.evaluate(1)



def test_temporary_result_files_removed_on_error(lvis_case, tmp_path,
                                                 monkeypatch) -> None:
    """Without outfile_prefix the result files go to a temporary directory,
    which is removed even when the evaluation fails (segm without masks)."""
    path, gt, _ = lvis_case
    scratch = tmp_path / 'scratch'
    scratch.mkdir()
    monkeypatch.setattr(tempfile, 'tempdir', str(scratch))
    metric = METRICS.build(dict(type='eva_mm.LVISMetric', ann_file=path,
                                metric='segm'))
    metric.dataset_meta = dict(classes=CLASSES)
    sample = _data_sample(gt['images'][0], [
        (1, [0., 0., 8., 8.], 0.5, np.zeros((1, 1), bool))]).to_dict()
    del sample['pred_instances']['masks']
    metric.process({}, [sample])
    with pytest.raises(ValueError, match='needs masks'):
        metric.evaluate(1)
    assert list(scratch.iterdir()) == []

def test_dataset_equals_mmdet_lvis_v1(lvis_case) -> None:
    """eva_mm.LVISV1Dataset gives mmdet's (lvis-package) data list."""
    path, gt, _ = lvis_case
    kwargs = dict(ann_file=path, data_prefix=dict(img='lvis/'),
                  metainfo=dict(classes=CLASSES), pipeline=[],
                  test_mode=True)
    ours = DATASETS.build(dict(type='eva_mm.LVISV1Dataset', **kwargs))
    reference = MMDetLVISV1Dataset(**kwargs)
    assert len(ours) == len(reference) == len(gt['images'])
    infos = [ours.get_data_info(i) for i in range(len(ours))]
    assert infos == [reference.get_data_info(i) for i in range(len(ours))]
    assert infos[0]['img_path'] == 'lvis/val2017/000000000012.jpg'
    assert sum(len(info['instances']) for info in infos) == len(
        gt['annotations'])


@pytest.mark.slow
def test_runs_without_the_lvis_package(lvis_case) -> None:
    """The runtime set-up has no ``lvis``: metric and dataset must not need
    it (an entry of None in sys.modules makes ``import lvis`` fail)."""
    path, _, _ = lvis_case
    script = f'''
import sys
sys.modules['lvis'] = None
import torch
from mmdet.structures import DetDataSample
from mmengine.registry import DATASETS, METRICS
from mmengine.structures import InstanceData
import eva_mm
classes = {CLASSES!r}
dataset = DATASETS.build(dict(type='eva_mm.LVISV1Dataset', ann_file={path!r},
                              data_prefix=dict(img=''),
                              metainfo=dict(classes=classes), pipeline=[],
                              test_mode=True))
metric = METRICS.build(dict(type='eva_mm.LVISMetric', ann_file={path!r}))
metric.dataset_meta = dataset.metainfo
samples = []
for info in map(dataset.get_data_info, range(len(dataset))):
    sample = DetDataSample(metainfo=dict(img_id=info['img_id'],
                           ori_shape=(info['height'], info['width'])))
    boxes = [inst['bbox'] for inst in info['instances']]
    labels = [inst['bbox_label'] for inst in info['instances']]
    sample.pred_instances = InstanceData(
        bboxes=torch.tensor(boxes), scores=torch.ones(len(boxes)),
        labels=torch.tensor(labels))
    samples.append(sample.to_dict())
metric.process({{}}, samples)
print(metric.evaluate(len(samples))['lvis/bbox_AP'])
'''
    out = subprocess.run([sys.executable, '-c', script], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert float(out.stdout.strip().splitlines()[-1]) == pytest.approx(1.0)


def test_mask_area_ranges_equal_detectron2s_lvis_evaluation(
        lvis_case, lvis_reference) -> None:
    """segm_area_from_mask: detectron2's LVISEvaluator deletes 'bbox' from
    the mask results (evaluation/lvis_evaluation.py:355-363), so lvis's
    LVISResults sizes them by mask area; the reference run that way."""
    path, gt, preds = lvis_case
    items = ['AP', 'APs', 'APm', 'APl']
    metric = METRICS.build(dict(type='eva_mm.LVISMetric', ann_file=path,
                                metric='segm', metric_items=items,
                                segm_area_from_mask=True))
    metric.dataset_meta = dict(classes=CLASSES)
    metric.process({}, [_data_sample(img, preds[img['id']]).to_dict()
                        for img in gt['images']])
    ours = metric.evaluate(len(gt['images']))
    results = _json_results(preds, True)
    for result in results:
        del result['bbox']
    reference = lvis_reference(path, results, 'segm')
    assert ours == pytest.approx(
        {f'lvis/segm_{k}': reference[k] for k in items}, abs=1e-4)
    # The case tells the two apart: box-area ranges give other numbers.
    by_box = lvis_reference(path, _json_results(preds, True), 'segm')
    assert max(abs(by_box[k] - reference[k]) for k in items[1:]) > 1e-3
