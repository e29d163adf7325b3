"""LVIS v1 box and mask AP on NumPy 2, with faster-coco-eval as the backend.

mmdet's ``LVISMetric`` evaluates through the ``lvis`` package, whose 0.5.3
release calls ``np.float`` (gone since NumPy 1.24) and runs its per-image
matching in Python (about half an hour for bbox + segm on LVIS val).
:class:`LVISMetric` keeps mmdet's interface and machinery (``process``,
result conversion, ``format_only``, ``outfile_prefix``, ``classwise``) and
swaps only the evaluator for faster-coco-eval's C++ ``COCOeval_faster`` in
its LVIS mode, which applies LVIS's federated rules:

- detections of a category that is neither annotated in the image nor in its
  ``neg_category_ids`` are dropped (the detector is not judged on them);
- unmatched detections of a category in the image's
  ``not_exhaustive_category_ids`` are ignored, matched ones count;
- APr / APc / APf average the categories by their ``frequency`` (r, c, f).

The fourth rule, at most 300 detections per image over all categories (the
top 300 by score), lives in the ``lvis`` package's result loader, not in its
evaluator: :func:`limit_dets_per_image` applies it the same way here.

faster-coco-eval keeps per-pair state for every (image, category) of a
pass: 19,809 x 1203 pairs on LVIS val, about 30 GB. LVIS's precision and
recall of a category depend on that category's ground truth and
detections only, so :func:`evaluate_lvis` runs one pass per category over
just the images where it is labelled (annotated or negative; detections
elsewhere are dropped by the first rule anyway), stacks the per-category
curves and averages them as ``LVISEval.summarize`` does. The numbers equal
the ``lvis`` reference to 1e-4 (tests/test_det/test_lvis_metric.py; timings
in docs/detection_evaluation.md).
"""
import itertools
import os.path as osp
import tempfile
from collections import OrderedDict, defaultdict
from operator import itemgetter
from typing import Dict, List, NamedTuple, Optional, Sequence, Union

import numpy as np
import pycocotools.mask as mask_util
from faster_coco_eval import COCO, COCOeval_faster
from mmdet.evaluation.metrics import CocoMetric
from mmdet.structures.mask import encode_mask_results
from mmengine.evaluator import BaseMetric
from mmengine.fileio import get_local_path, load
from mmengine.logging import MMLogger
from terminaltables import AsciiTable

from eva_mm.registry import METRICS

# LVIS's per-image detection budget (Gupta et al., 2019, Sec. 5; the
# ``max_dets`` default of the ``lvis`` package's LVISResults).
LVIS_MAX_DETS = 300
# mmdet's LVISMetric reports these unless metric_items says otherwise.
_DEFAULT_ITEMS = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'APr', 'APc',
                  'APf')
_AREAS = ('all', 's', 'm', 'l')


def limit_dets_per_image(anns: List[dict], max_dets: int) -> List[dict]:
    """Keep the ``max_dets`` highest-scoring detections of every image.

    Same selection and order as the ``lvis`` package's
    ``LVISResults.limit_dets_per_image``: images in order of first
    appearance, a stable sort by descending score only where an image has
    more than ``max_dets`` detections. The order decides ties between equal
    scores, so it is kept exactly.

    Args:
        anns: COCO-style results with ``image_id`` and ``score``.
        max_dets: Detections kept per image over all categories.

    Returns:
        The kept results.
    """
    by_image: Dict[int, List[dict]] = defaultdict(list)
    for ann in anns:
        by_image[ann['image_id']].append(ann)
    kept = []
    for image_anns in by_image.values():
        if len(image_anns) > max_dets:
            # sorted() is stable under reverse=True, as in LVISResults.
            image_anns = sorted(
                image_anns, key=itemgetter('score'), reverse=True)[:max_dets]
        kept.extend(image_anns)
    return kept


def load_lvis_api(ann_file: str, backend_args: Optional[dict] = None) -> COCO:
    """Load an LVIS-format annotation file and check its federated fields.

    Args:
        ann_file: Path (or backend URI) of the LVIS json.
        backend_args: mmengine file backend arguments.

    Returns:
        faster-coco-eval's COCO index of the file.

    Raises:
        ValueError: If images lack ``neg_category_ids`` /
            ``not_exhaustive_category_ids`` or categories lack a
            ``frequency`` of 'r', 'c' or 'f'.
    """
    with get_local_path(ann_file, backend_args=backend_args) as local_path:
        api = COCO(local_path)
    for key in ('neg_category_ids', 'not_exhaustive_category_ids'):
        missing = [
            img['id'] for img in api.dataset['images'] if key not in img
        ]
        if missing:
            raise ValueError(
                f'{ann_file} is not in LVIS format: {len(missing)} images '
                f'(e.g. id {missing[0]}) have no {key!r}. LVIS evaluation '
                'needs the federated labels of every image; use the LVIS v1 '
                'annotation files (or add the key, [] if none).')
    bad = [cat['id'] for cat in api.dataset['categories']
           if cat.get('frequency') not in ('r', 'c', 'f')]
    if bad:
        raise ValueError(
            f'{ann_file}: categories {bad[:5]} have no frequency of '
            "'r', 'c' or 'f', which APr/APc/APf group them by.")
    return api


class LVISCurves(NamedTuple):
    """Per-category results of an LVIS evaluation.

    Attributes:
        precision: [iou thr, recall thr, category, area] interpolated
            precision, -1 where a category has no ground truth.
        recall: [iou thr, category, area] final recall, -1 likewise.
        cat_ids: Category id of each category index (sorted).
        frequencies: 'r', 'c' or 'f' of each category index.
        iou_thrs: The IoU thresholds (0.5:0.05:0.95).
        area_labels: Area range names ('all', 'small', 'medium', 'large').
    """
    precision: np.ndarray
    recall: np.ndarray
    cat_ids: List[int]
    frequencies: List[str]
    iou_thrs: np.ndarray
    area_labels: List[str]


def evaluate_lvis(gt_api: COCO,
                  anns: List[dict],
                  iou_type: str,
                  logger: Optional[MMLogger] = None,
                  max_dets: int = LVIS_MAX_DETS,
                  segm_area_from_mask: bool = False) -> LVISCurves:
    """LVIS evaluation of results, one faster-coco-eval pass per category.

    Args:
        gt_api: The LVIS ground truth (:func:`load_lvis_api`).
        anns: COCO-style results (``image_id``, ``category_id``, ``bbox``,
            ``score``, and ``segmentation`` for 'segm'), at most
            ``max_dets`` per image (:func:`limit_dets_per_image`).
        iou_type: 'bbox' or 'segm'.
        logger: Gets one line of progress; silent when None.
        max_dets: The per-image detection budget the results were cut to.
        segm_area_from_mask: For 'segm', put a detection in its area range
            by its mask area instead of its box area.

    Returns:
        The per-category precision and recall.
    """
    cat_ids = sorted(gt_api.getCatIds())
    img_ids = set(gt_api.getImgIds())
    # LVIS's first federated rule, applied before the passes so that each
    # pass covers only the images where its category is labelled.
    labelled: Dict[int, set] = {
        img['id']: set(img['neg_category_ids'])
        for img in gt_api.dataset['images']
    }
    for ann in gt_api.dataset['annotations']:
        labelled[ann['image_id']].add(ann['category_id'])
    dets_of: Dict[int, List[dict]] = defaultdict(list)
    for ann_id, ann in enumerate(anns, 1):
        if ann['image_id'] not in img_ids:
            raise ValueError(
                f'A result is for image {ann["image_id"]}, which is not in '
                'the annotation file: results and ann_file must be of the '
                'same split.')
        # As LVISResults completes results that have boxes (mmdet's
        # results2json writes them for masks too): the area that decides
        # the area range is the box's, also for 'segm'; results without a
        # box get their mask's area.
        ann['id'] = ann_id
        if iou_type == 'segm' and segm_area_from_mask:
            ann['area'] = float(mask_util.area(ann['segmentation']))
        else:
            ann['area'] = ann['bbox'][2] * ann['bbox'][3]
        if ann['category_id'] in labelled[ann['image_id']]:
            dets_of[ann['category_id']].append(ann)

    precision = recall = iou_thrs = area_labels = None
    for k, cat_id in enumerate(cat_ids):
        dets = dets_of.pop(cat_id, [])
        images = set(gt_api.catToImgs[cat_id])
        images.update(det['image_id'] for det in dets)
        if not images:
            continue  # never labelled: -1 throughout, as in LVISEval
        # The results of one category as a COCO index (not loadRes, which
        # deep-copies all 1203 categories every time); their order, which
        # breaks ties between equal scores, stays that of LVISResults.
        dt_api = COCO(print_function=lambda *_: None)
        dt_api.dataset = dict(images=[gt_api.imgs[i] for i in images],
                              categories=[gt_api.cats[cat_id]],
                              annotations=dets)
        dt_api.createIndex()
        lvis_eval = COCOeval_faster(
            gt_api, dt_api, iou_type, print_function=lambda *_: None,
            lvis_style=True)
        params = lvis_eval.params
        params.catIds = [cat_id]
        params.imgIds = sorted(images)
        # One budget per image (no 1/10/100 cut-offs); the per-image limit
        # already keeps every (image, category) under it.
        params.maxDets = [max_dets]
        if precision is None:
            iou_thrs, area_labels = params.iouThrs, list(params.areaRngLbl)
            precision = -np.ones((len(iou_thrs), len(params.recThrs),
                                  len(cat_ids), len(area_labels)))
            recall = -np.ones((len(iou_thrs), len(cat_ids),
                               len(area_labels)))
        lvis_eval.evaluate()
        lvis_eval.accumulate()
        # faster-coco-eval adds a max-dets axis (of one) at the end.
        precision[:, :, k] = lvis_eval.eval['precision'][:, :, 0, :, 0]
        recall[:, k] = lvis_eval.eval['recall'][:, 0, :, 0]
    if precision is None:
        raise ValueError('The annotation file labels no category in any '
                         'image: nothing to evaluate.')
    if logger is not None:
        logger.info(f'LVIS {iou_type}: {len(anns)} detections, '
                    f'{len(cat_ids)} categories evaluated.')
    return LVISCurves(precision, recall, cat_ids,
                      [gt_api.cats[c]['frequency'] for c in cat_ids],
                      iou_thrs, area_labels)


def summarize_lvis(curves: LVISCurves,
                   max_dets: int = LVIS_MAX_DETS) -> Dict[str, float]:
    """The 13 LVIS numbers, as ``LVISEval.summarize`` averages them.

    Args:
        curves: The output of :func:`evaluate_lvis`.
        max_dets: The per-image budget, named in the recall keys.

    Returns:
        ``AP``, ``AP50``, ``AP75``, ``APs``/``m``/``l``, ``APr``/``c``/``f``,
        ``AR@300`` and ``ARs``/``m``/``l@300``; -1 where nothing is scored.
    """

    def mean(values: np.ndarray) -> float:
        values = values[values > -1]
        return float(values.mean()) if values.size else -1.

    area = {label[0]: i for i, label in enumerate(curves.area_labels)}
    ap = curves.precision
    # Exact float comparison, as LVISEval selects the AP50/AP75 thresholds.
    ap50 = ap[np.where(curves.iou_thrs == 0.5)[0]]
    ap75 = ap[np.where(curves.iou_thrs == 0.75)[0]]
    freq = np.array(curves.frequencies)
    results = {
        'AP': mean(ap[..., area['a']]),
        'AP50': mean(ap50[..., area['a']]),
        'AP75': mean(ap75[..., area['a']]),
    }
    for size in 'sml':
        results[f'AP{size}'] = mean(ap[..., area[size]])
    for group in 'rcf':
        results[f'AP{group}'] = mean(ap[:, :, freq == group, area['a']])
    results[f'AR@{max_dets}'] = mean(curves.recall[..., area['a']])
    for size in 'sml':
        results[f'AR{size}@{max_dets}'] = mean(
            curves.recall[..., area[size]])
    return results


@METRICS.register_module()
class LVISMetric(BaseMetric):
    """LVIS v1 evaluation, mmdet's ``LVISMetric`` on faster-coco-eval.

    Same arguments and metric names as mmdet's ``LVISMetric``
    (``lvis/bbox_AP``, ``lvis/segm_APr``, ...), but values are not rounded
    to three decimals, and ``ann_file`` is required: LVIS's federated
    labels (negative / not-exhaustive categories per image, category
    frequencies) exist only in the annotation file. ``metric_items`` may
    also name ``AR@N``, ``ARs@N``, ``ARm@N`` and ``ARl@N`` with N =
    ``max_dets_per_image`` (300).
    ``'proposal'`` is class-agnostic COCO recall at each of
    ``proposal_nums`` per image (``AR@N``, ``ARs@N``, ``ARm@N``, ``ARl@N``).
    mmdet's ``'proposal_fast'`` is refused: its ``eval_recalls`` builds a
    ragged array, which NumPy 2 rejects.

    Args:
        ann_file: Path of the LVIS v1 json (e.g. ``lvis_v1_val.json``).
        metric: 'bbox', 'segm', 'proposal' or a list of them.
        classwise: Also report and log the AP of every category.
        proposal_nums: Proposals per image for 'proposal'.
        iou_thrs: IoU thresholds of 'proposal' (0.5:0.05:0.95 when None).
        metric_items: Names to report; the nine AP numbers by default.
        format_only: Only write the result json files (needs
            ``outfile_prefix``).
        outfile_prefix: Prefix of the result json files; a temporary
            directory when None.
        collect_device: Device for gathering results across ranks.
        prefix: Metric name prefix; ``'lvis'`` when None.
        file_client_args: Removed in mmdet 3; must stay None.
        backend_args: mmengine file backend arguments.
        max_dets_per_image: Detections scored per image over all
            categories: LVIS's 300, or EVA's 1000 for its 1536 px test.
        segm_area_from_mask: Size the mask results' area ranges (APs, APm,
            APl of 'segm') by mask area, as detectron2's LVIS evaluator,
            which drops the boxes from mask results so that ``lvis``
            computes the area from the mask (EVA-01/det/detectron2/
            evaluation/lvis_evaluation.py:355-363). False: by box area, as
            mmdet's LVISMetric.

    mmdet's ``LVISMetric`` cannot be the base class: its ``__init__`` needs
    the ``lvis`` package. The result files are written by an mmdet
    ``CocoMetric`` held inside (its ``results2json``, the format mmdet's
    ``LVISMetric`` inherits too).

    Raises:
        ValueError: If ``ann_file`` is missing or not in LVIS format, or
            ``format_only`` is set without ``outfile_prefix``.
        KeyError: If a metric is not one of the three above.
    """
    # mmdet's LVISMetric's, so the metric names stay ``lvis/bbox_AP``.
    default_prefix: Optional[str] = 'lvis'

    def __init__(self,
                 ann_file: Optional[str] = None,
                 metric: Union[str, List[str]] = 'bbox',
                 classwise: bool = False,
                 proposal_nums: Sequence[int] = (100, 300, 1000),
                 iou_thrs: Optional[Union[float, Sequence[float]]] = None,
                 metric_items: Optional[Sequence[str]] = None,
                 format_only: bool = False,
                 outfile_prefix: Optional[str] = None,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None,
                 file_client_args: Optional[dict] = None,
                 backend_args: Optional[dict] = None,
                 max_dets_per_image: int = LVIS_MAX_DETS,
                 segm_area_from_mask: bool = False) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.metrics = metric if isinstance(metric, list) else [metric]
        allowed = ('bbox', 'segm', 'proposal')
        for name in self.metrics:
            if name == 'proposal_fast':
                raise KeyError(
                    "metric 'proposal_fast' is not available: mmdet's "
                    'eval_recalls fails on NumPy 2. Use '
                    "metric='proposal' (COCO recall at proposal_nums).")
            if name not in allowed:
                raise KeyError(f'metric should be one of {allowed}, but got '
                               f'{name!r}.')
        if ann_file is None:
            raise ValueError(
                'eva_mm.LVISMetric needs ann_file (the LVIS json, e.g. '
                'lvis_v1_val.json): the federated labels it evaluates with '
                'are not in the data samples.')
        if format_only and outfile_prefix is None:
            raise ValueError('format_only=True writes the result files to '
                             'outfile_prefix; set outfile_prefix.')
        if file_client_args is not None:
            raise ValueError('file_client_args was removed in mmdet 3; use '
                             'backend_args.')
        self.classwise = classwise
        self.proposal_nums = list(proposal_nums)
        self.iou_thrs = iou_thrs
        self.metric_items = metric_items
        self.format_only = format_only
        self.outfile_prefix = outfile_prefix
        self.backend_args = backend_args
        if max_dets_per_image < 1:
            raise ValueError('max_dets_per_image must be a positive number '
                             f'of detections, got {max_dets_per_image}.')
        self.max_dets_per_image = max_dets_per_image
        self.segm_area_from_mask = segm_area_from_mask
        self._lvis_api = load_lvis_api(ann_file, backend_args)
        # Writes mmdet's COCO-style result json files; cat_ids set per run.
        self._result_writer = CocoMetric()
        self.img_ids: Optional[List[int]] = None

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        """Keep each sample's predictions, masks RLE-encoded.

        The same fields as mmdet's ``LVISMetric.process``; the ground truth
        comes from ``ann_file``.

        Args:
            data_batch: The dataloader's batch (unused).
            data_samples: Data samples with ``pred_instances``.
        """
        for data_sample in data_samples:
            pred = data_sample['pred_instances']
            result = dict(img_id=data_sample['img_id'],
                          bboxes=pred['bboxes'].cpu().numpy(),
                          scores=pred['scores'].cpu().numpy(),
                          labels=pred['labels'].cpu().numpy())
            if 'masks' in pred:
                result['masks'] = encode_mask_results(
                    pred['masks'].detach().cpu().numpy())
            # Some detectors score masks apart from boxes.
            if 'mask_scores' in pred:
                result['mask_scores'] = pred['mask_scores'].cpu().numpy()
            self.results.append(result)

    def _label_cat_ids(self) -> List[int]:
        """Category id of each label.

        As in mmdet's ``CocoDataset`` and ``CocoMetric``: the file's
        categories named in ``dataset_meta['classes']``, in file order.
        """
        classes = (self.dataset_meta or {}).get('classes')
        if classes is None:
            return self._lvis_api.get_cat_ids()
        cat_ids = self._lvis_api.get_cat_ids(cat_names=list(classes))
        if len(cat_ids) != len(classes):
            names = {cat['name'] for cat in self._lvis_api.cats.values()}
            missing = [name for name in classes if name not in names]
            raise ValueError(
                f'{len(missing)} dataset classes are not categories of the '
                f'annotation file, e.g. {missing[:5]}: the metric and the '
                'dataset must use the same LVIS json.')
        return cat_ids

    def _evaluate_proposals(self, result_file: str,
                            logger: MMLogger) -> Dict[str, float]:
        """Class-agnostic recall at each number of proposals per image."""
        proposal_eval = COCOeval_faster(
            self._lvis_api, self._lvis_api.loadRes(load(result_file)),
            'bbox', print_function=logger.info)
        proposal_eval.params.imgIds = self.img_ids
        proposal_eval.params.useCats = 0
        if self.iou_thrs is not None:
            proposal_eval.params.iouThrs = np.atleast_1d(
                np.asarray(self.iou_thrs, dtype=np.float64))
        proposal_eval.params.maxDets = sorted(self.proposal_nums)
        proposal_eval.evaluate()
        proposal_eval.accumulate()
        # recall: [iou thr, category (one), area range, max dets].
        recall = proposal_eval.eval['recall']
        results = {}
        for m, num in enumerate(proposal_eval.params.maxDets):
            for a, area in enumerate(_AREAS):
                values = recall[:, :, a, m]
                values = values[values > -1]
                name = f'AR@{num}' if area == 'all' else f'AR{area}@{num}'
                results[name] = float(values.mean()) if values.size else -1.
        return results

    def _log_classwise(self, curves: LVISCurves,
                       eval_results: Dict[str, float],
                       logger: MMLogger) -> None:
        """Add and log the AP of every category (all areas, 0.5:0.95)."""
        rows = []
        for idx, cat_id in enumerate(curves.cat_ids):
            name = self._lvis_api.cats[cat_id]['name']
            precision = curves.precision[:, :, idx, 0]
            precision = precision[precision > -1]
            ap = float(precision.mean()) if precision.size else float('nan')
            eval_results[f'{name}_precision'] = ap
            rows.append((name, f'{ap:0.3f}'))
        num_columns = min(6, len(rows) * 2)
        flat = list(itertools.chain(*rows))
        table = [['category', 'AP'] * (num_columns // 2)]
        table += itertools.zip_longest(
            *[flat[i::num_columns] for i in range(num_columns)])
        logger.info('\n' + AsciiTable(table).table)

    def compute_metrics(self, results: list) -> Dict[str, float]:
        """Write the result files and evaluate them with LVIS's rules.

        Args:
            results: The predictions kept by ``process``.

        Returns:
            ``{'bbox_AP': ..., 'segm_APr': ..., ...}`` (the prefix is added
            by ``evaluate``); empty when ``format_only``.
        """
        logger: MMLogger = MMLogger.get_current_instance()
        if self._result_writer.cat_ids is None:
            self._result_writer.cat_ids = self._label_cat_ids()
        if self.img_ids is None:
            self.img_ids = self._lvis_api.get_img_ids()
        if self.outfile_prefix is not None:
            return self._evaluate(results, self.outfile_prefix, logger)
        with tempfile.TemporaryDirectory() as tmp_dir:
            return self._evaluate(results, osp.join(tmp_dir, 'results'),
                                  logger)

    def _evaluate(self, preds: list, outfile_prefix: str,
                  logger: MMLogger) -> Dict[str, float]:
        """Write the result files under ``outfile_prefix``, evaluate them.

        Args:
            preds: The predictions kept by ``process``.
            outfile_prefix: Path prefix of the result json files.
            logger: Where the summaries go.

        Returns:
            As :meth:`compute_metrics`.
        """
        result_files = self._result_writer.results2json(preds, outfile_prefix)

        eval_results: Dict[str, float] = OrderedDict()
        if self.format_only:
            logger.info(f'results are saved in {osp.dirname(outfile_prefix)}')
            return eval_results

        for metric in self.metrics:
            logger.info(f'Evaluating {metric}...')
            if metric == 'proposal':
                values = self._evaluate_proposals(result_files[metric],
                                                  logger)
                items = self.metric_items or list(values)
                eval_results.update((k, values[k]) for k in items)
                continue
            if metric not in result_files:
                raise ValueError(
                    "metric 'segm' needs masks in the predictions "
                    '(pred_instances.masks); the model gave none.')
            anns = limit_dets_per_image(load(result_files[metric]),
                                        self.max_dets_per_image)
            curves = evaluate_lvis(self._lvis_api, anns, metric, logger,
                                   self.max_dets_per_image,
                                   self.segm_area_from_mask)
            values = summarize_lvis(curves, self.max_dets_per_image)
            logger.info(f'LVIS {metric}: ' + ', '.join(
                f'{k} {v:.4f}' for k, v in values.items()))
            for item in self.metric_items or _DEFAULT_ITEMS:
                if item not in values:
                    raise KeyError(f'Unknown metric item {item!r}; choose '
                                   f'from {list(values)}.')
                eval_results[f'{metric}_{item}'] = values[item]
            if self.classwise:
                self._log_classwise(curves, eval_results, logger)
        return eval_results
