"""LVIS evaluation time: eva_mm.LVISMetric against the ``lvis`` reference.

Generates an LVIS v1 val-sized ground truth (19,809 images, 1203
categories with LVIS v1's 337 rare / 461 common / 405 frequent, about 12.4
polygon annotations, a few negative and not-exhaustive categories per
image; no pixels) and 300 box detections per image (jittered copies of the
annotations, copies with a wrong class, and background boxes of positive,
negative and unannotated categories), then times

- eva_mm.LVISMetric's ``evaluate`` on the processed results (what
  ``tools/test.py`` waits for after inference: writing the result json and
  evaluating it), and its evaluation alone (result json to numbers);
- the ``lvis`` 0.5.3 reference (``LVISResults`` + ``LVISEval.run``) on the
  same result json, with NumPy's removed ``np.float`` restored.

The reference needs about an hour on the full set, so it runs on the first
``--reference-images`` images (a ground-truth file of those images only),
where eva_mm.LVISMetric runs too for the agreement of all 13 numbers and a
same-size speed ratio. Masks ('segm', RLE ellipses inscribed in the boxes)
are evaluated on the first ``--segm-images`` images by both evaluators.

Every evaluation runs in a fresh subprocess, which reports its peak
resident memory (``ru_maxrss``).

Example (the numbers in docs/detection_evaluation.md):
    OMP_NUM_THREADS=1 nice -n 19 python tools/analysis/lvis_eval_benchmark.py \
        --images 19809 --reference-images 2000 --segm-images 1000
"""
import argparse
import json
import os
import os.path as osp
import resource
import subprocess
import sys
import time
from typing import Dict, List, Optional, Tuple

import numpy as np

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
# LVIS v1: 1203 categories, 337 rare, 461 common, 405 frequent (Gupta et al.
# 2019, v1 release notes); val has 19,809 images and 244,707 instances.
NUM_RARE, NUM_COMMON, NUM_FREQUENT = 337, 461, 405
NUM_CATEGORIES = NUM_RARE + NUM_COMMON + NUM_FREQUENT
LVIS_VAL_IMAGES = 19809
DETS_PER_IMAGE = 300
LVIS_KEYS = ['AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'APr', 'APc', 'APf',
             'AR@300', 'ARs@300', 'ARm@300', 'ARl@300']


def _ellipse(boxes: np.ndarray) -> np.ndarray:
    """8-gon polygons inscribed in xyxy boxes, shape (n, 16)."""
    angles = np.arange(8) * (2 * np.pi / 8)
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    rx, ry = (boxes[:, 2] - boxes[:, 0]) / 2, (boxes[:, 3] - boxes[:, 1]) / 2
    xs = cx[:, None] + rx[:, None] * np.cos(angles)
    ys = cy[:, None] + ry[:, None] * np.sin(angles)
    return np.stack([xs, ys], 2).reshape(len(boxes), 16)


def _polygon_area(polygons: np.ndarray) -> np.ndarray:
    """Shoelace areas of (n, 2k) polygons."""
    xs, ys = polygons[:, 0::2], polygons[:, 1::2]
    return 0.5 * np.abs((xs * np.roll(ys, -1, 1) -
                         np.roll(xs, -1, 1) * ys).sum(1))


def _random_boxes(rng: np.random.Generator, n: int, height: int,
                  width: int) -> np.ndarray:
    """xyxy boxes with log-uniform size (8 to 400 px) and aspect ratio."""
    side = np.exp(rng.uniform(np.log(8), np.log(400), n))
    aspect = np.exp(rng.uniform(np.log(0.5), np.log(2), n))
    w = np.minimum(side * np.sqrt(aspect), width - 1)
    h = np.minimum(side / np.sqrt(aspect), height - 1)
    x = rng.uniform(0, width - w)
    y = rng.uniform(0, height - h)
    return np.round(np.stack([x, y, x + w, y + h], 1), 2)


def generate(num_images: int, seed: int
             ) -> Tuple[dict, Dict[str, np.ndarray]]:
    """LVIS-format ground truth and 300 detections per image.

    Args:
        num_images: Number of images.
        seed: Random seed.

    Returns:
        The LVIS json dict and the detections: ``bboxes`` (n, 300, 4) xyxy,
        ``scores`` (n, 300), ``labels`` (n, 300) (category id - 1).
    """
    rng = np.random.default_rng(seed)
    frequency = np.array(['r'] * NUM_RARE + ['c'] * NUM_COMMON +
                         ['f'] * NUM_FREQUENT)[rng.permutation(NUM_CATEGORIES)]
    categories = [dict(id=i + 1, name=f'category_{i + 1}',
                       frequency=str(f), synset=f'category_{i + 1}.n.01')
                  for i, f in enumerate(frequency)]
    # Long tail: how likely a category is to appear in a given image.
    weight = np.select([frequency == 'f', frequency == 'c'], [1.0, 0.12],
                       0.015)
    weight /= weight.sum()
    images, annotations = [], []
    bboxes = np.zeros((num_images, DETS_PER_IMAGE, 4), np.float32)
    scores = np.zeros((num_images, DETS_PER_IMAGE), np.float32)
    labels = np.zeros((num_images, DETS_PER_IMAGE), np.int64)
    for index in range(num_images):
        img_id = 1 + 2 * index  # LVIS ids are COCO's: not contiguous
        width, height = int(rng.choice([640, 612, 500])), int(
            rng.choice([480, 427, 640]))
        num_pos = min(1 + rng.poisson(2.5), 12)
        cats = rng.choice(NUM_CATEGORIES, num_pos + 1 + rng.poisson(5),
                          replace=False, p=weight) + 1
        positives, negatives = cats[:num_pos], cats[num_pos:]
        counts = 1 + rng.poisson(2.55, num_pos)
        gt_cats = np.repeat(positives, counts)
        gt_boxes = _random_boxes(rng, len(gt_cats), height, width)
        polygons = np.round(_ellipse(gt_boxes), 2)
        areas = _polygon_area(polygons)
        images.append(dict(
            id=img_id, width=width, height=height,
            coco_url=f'http://images.cocodataset.org/val2017/{img_id:012d}'
                     '.jpg',
            neg_category_ids=sorted(int(c) for c in negatives),
            not_exhaustive_category_ids=(
                [int(positives[0])] if rng.random() < 0.3 else [])))
        for cat, box, polygon, area in zip(gt_cats, gt_boxes, polygons,
                                           areas):
            annotations.append(dict(
                id=len(annotations) + 1, image_id=img_id,
                category_id=int(cat), area=float(area),
                bbox=[float(box[0]), float(box[1]),
                      float(box[2] - box[0]), float(box[3] - box[1])],
                segmentation=[polygon.tolist()]))
        # Detections: a jittered copy of each annotation, a copy with a
        # class of the image's positive or negative lists, and background
        # boxes (30% positive, 20% negative, 50% any category).
        num_gt = len(gt_cats)
        size = np.concatenate([gt_boxes[:, 2:] - gt_boxes[:, :2]] * 2, 1)
        jitter = gt_boxes + rng.normal(0, 0.08, gt_boxes.shape) * size
        num_bg = DETS_PER_IMAGE - 2 * num_gt
        kind = rng.random(num_bg)
        bg_cats = np.where(
            kind < 0.3, rng.choice(positives, num_bg),
            np.where(kind < 0.5, rng.choice(negatives, num_bg),
                     rng.integers(1, NUM_CATEGORIES + 1, num_bg)))
        det_boxes = np.concatenate(
            [jitter, gt_boxes, _random_boxes(rng, num_bg, height, width)])
        det_boxes[:, 0::2] = np.clip(det_boxes[:, 0::2], 0, width)
        det_boxes[:, 1::2] = np.clip(det_boxes[:, 1::2], 0, height)
        bboxes[index] = det_boxes
        labels[index] = np.concatenate(
            [gt_cats, rng.choice(cats, num_gt), bg_cats]) - 1
        scores[index] = np.concatenate([
            rng.uniform(0.3, 1.0, num_gt), rng.uniform(0.1, 0.8, num_gt),
            rng.uniform(0.0, 0.6, num_bg)])
    gt = dict(images=images, annotations=annotations, categories=categories,
              info={}, licenses=[])
    return gt, dict(bboxes=bboxes, scores=scores, labels=labels)


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def stage_fast(gt_path: str, preds_path: str, segm: bool,
               outfile_prefix: str) -> dict:
    """eva_mm.LVISMetric on the processed results of every image."""
    import pycocotools.mask as mask_utils
    from mmengine.fileio import load
    from mmengine.registry import METRICS

    from eva_mm.evaluation.metrics.lvis_metric import (LVIS_MAX_DETS,
                                                       evaluate_lvis,
                                                       limit_dets_per_image,
                                                       summarize_lvis)
    preds = dict(np.load(preds_path))  # NpzFile re-reads per access
    with open(gt_path) as f:
        images = json.load(f)['images']
    start = time.perf_counter()
    metric = METRICS.build(dict(
        type='eva_mm.LVISMetric', ann_file=gt_path,
        metric=['bbox', 'segm'] if segm else 'bbox', metric_items=LVIS_KEYS,
        outfile_prefix=outfile_prefix))
    gt_load = time.perf_counter() - start
    metric.dataset_meta = dict(classes=[f'category_{i + 1}'
                                        for i in range(NUM_CATEGORIES)])
    # What LVISMetric.process() stores per image (masks as RLE), built
    # directly: encoding full-image masks here would time mask drawing.
    for index, img in enumerate(images):
        result = dict(img_id=img['id'], bboxes=preds['bboxes'][index],
                      scores=preds['scores'][index],
                      labels=preds['labels'][index])
        if segm:
            polygons = _ellipse(result['bboxes'].astype(np.float64))
            result['masks'] = mask_utils.frPyObjects(
                polygons.tolist(), img['height'], img['width'])
        metric.results.append(
            (dict(img_id=img['id'], width=img['width'],
                  height=img['height']), result))
    start = time.perf_counter()
    values = metric.evaluate(len(images))
    total = time.perf_counter() - start
    eval_only = {}
    for iou_type in (['bbox', 'segm'] if segm else ['bbox']):
        # The same steps as compute_metrics after writing the result file.
        start = time.perf_counter()
        anns = limit_dets_per_image(
            load(f'{outfile_prefix}.{iou_type}.json'), LVIS_MAX_DETS)
        summarize_lvis(evaluate_lvis(metric._lvis_api, anns, iou_type))
        eval_only[iou_type] = time.perf_counter() - start
    return dict(gt_load_s=gt_load, evaluate_s=total, eval_only_s=eval_only,
                metrics=values, peak_rss_gb=_peak_rss_gb())


def stage_reference(gt_path: str, outfile_prefix: str, segm: bool) -> dict:
    """The lvis package's LVISResults + LVISEval on the same result files."""
    np.float = float  # removed in NumPy 1.24; lvis 0.5.3 still uses it
    from lvis import LVIS, LVISEval, LVISResults

    start = time.perf_counter()
    lvis_gt = LVIS(gt_path)
    gt_load = time.perf_counter() - start
    times, values = {}, {}
    for iou_type in (['bbox', 'segm'] if segm else ['bbox']):
        start = time.perf_counter()
        lvis_eval = LVISEval(
            lvis_gt, LVISResults(lvis_gt, f'{outfile_prefix}.{iou_type}.json'),
            iou_type)
        lvis_eval.run()
        times[iou_type] = time.perf_counter() - start
        values.update({f'lvis/{iou_type}_{k}': float(v)
                       for k, v in lvis_eval.get_results().items()})
    return dict(gt_load_s=gt_load, eval_only_s=times, metrics=values,
                peak_rss_gb=_peak_rss_gb())


def _subset(gt: dict, preds: Dict[str, np.ndarray],
            num: int) -> Tuple[dict, Dict[str, np.ndarray]]:
    """The first ``num`` images with their annotations and detections."""
    keep = {img['id'] for img in gt['images'][:num]}
    sub = dict(gt, images=gt['images'][:num],
               annotations=[a for a in gt['annotations']
                            if a['image_id'] in keep])
    return sub, {k: v[:num] for k, v in preds.items()}


def _run_stage(args: List[str]) -> dict:
    """Run one stage in a fresh interpreter; its last stdout line is JSON."""
    out = subprocess.run(
        [sys.executable, __file__] + args, cwd=REPO_ROOT, check=True,
        stdout=subprocess.PIPE, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _max_diff(ours: dict, reference: dict) -> Optional[float]:
    common = [k for k in reference if k in ours]
    return max(abs(ours[k] - reference[k]) for k in common) if common else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--images', type=int, default=LVIS_VAL_IMAGES)
    parser.add_argument('--reference-images', type=int, default=2000,
                        help='images the lvis reference runs on (0: none)')
    parser.add_argument('--segm-images', type=int, default=1000,
                        help='images both evaluators run segm on (0: none)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--work-dir', default='/tmp/lvis_eval_benchmark')
    parser.add_argument('--json-out', help='also write the results here')
    parser.add_argument('--stage', choices=['fast', 'reference'],
                        help=argparse.SUPPRESS)
    parser.add_argument('--name', help=argparse.SUPPRESS)
    parser.add_argument('--segm', action='store_true',
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = args.work_dir
    if args.stage is not None:
        gt_path = osp.join(work, f'{args.name}.gt.json')
        prefix = osp.join(work, f'{args.name}.results')
        if args.stage == 'fast':
            report = stage_fast(gt_path, osp.join(work, f'{args.name}.npz'),
                                args.segm, prefix)
        else:
            report = stage_reference(gt_path, prefix, args.segm)
        print(json.dumps(report))
        return

    for flag in ('reference_images', 'segm_images'):
        if getattr(args, flag) > args.images:
            parser.error(f'--{flag.replace("_", "-")} is more than --images')
    os.makedirs(work, exist_ok=True)
    start = time.perf_counter()
    gt, preds = generate(args.images, args.seed)
    print(f'generated {len(gt["images"])} images, {len(gt["annotations"])} '
          f'annotations, {preds["scores"].size} detections in '
          f'{time.perf_counter() - start:.0f} s', flush=True)
    cases = [('full', args.images, False)]
    if args.reference_images:
        cases.append(('reference', args.reference_images, False))
    if args.segm_images:
        cases.append(('segm', args.segm_images, True))
    report = dict(images=args.images, annotations=len(gt['annotations']),
                  detections=int(preds['scores'].size), cases={})
    for name, num, segm in cases:
        sub_gt, sub_preds = _subset(gt, preds, num)
        with open(osp.join(work, f'{name}.gt.json'), 'w') as f:
            json.dump(sub_gt, f)
        np.savez(osp.join(work, f'{name}.npz'), **sub_preds)
        common = ['--work-dir', work, '--name', name] + (['--segm']
                                                         if segm else [])
        case = dict(images=num, fast=_run_stage(['--stage', 'fast'] + common))
        print(f'[{name}] eva_mm.LVISMetric: {json.dumps(case["fast"])}',
              flush=True)
        if name != 'full':
            case['reference'] = _run_stage(['--stage', 'reference'] + common)
            case['max_abs_diff'] = _max_diff(case['fast']['metrics'],
                                             case['reference']['metrics'])
            print(f'[{name}] lvis reference: {json.dumps(case["reference"])}'
                  f'\n[{name}] max |difference| over all numbers: '
                  f'{case["max_abs_diff"]}', flush=True)
        report['cases'][name] = case
    if args.json_out:
        with open(args.json_out, 'w') as f:
            json.dump(report, f, indent=1)


if __name__ == '__main__':
    main()
