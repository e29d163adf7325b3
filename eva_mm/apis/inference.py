"""Inference on single images with any eva_mm detector or segmentor config.

One entry point for both tasks: :func:`~eva_mm.apis.model_loading.init_model`
picks mmdet or mmseg by the config's ``default_scope``, :func:`inference`
runs images through the model, :func:`draw_result` draws a prediction and
:func:`result_to_json` turns it into plain JSON. mmdet and mmseg are
imported inside the functions so that ``import eva_mm`` stays light.

The models are built by the toolboxes' task functions (mmdet's
``init_detector``, mmseg's ``init_model``) and run by their inferencers,
mmdet's ``DetInferencer`` and mmseg's ``MMSegInferencer``, subclassed in
:mod:`eva_mm.apis.inferencers`. Reused: input listing (paths, BGR arrays),
the test pipeline with the toolboxes' ``InferencerLoader``, batching and
collation, the forward pass, and the visualizers that :func:`draw_result`
draws with. Overridden, and why:

- ``_init_model`` returns the model :func:`~eva_mm.apis.init_model` made
  (from the model, config or zoo name the inferencer was given): the
  inferencers' loader only warns about missing weights, where
  ``init_model`` refuses a partial load unless ``allow_partial_load``, and
  reads no released file in its official layout.
- ``_init_pipeline`` drops ``LoadAnnotations``, which every evaluation config
  has and a bare image cannot feed (mmseg's drops it itself, mmdet's does
  not), and reads the pipeline where the toolboxes' single-image functions
  do (mmdet: the test data set's; mmseg: ``test_pipeline``, which configs
  written for inference alone have without a test data set).
- ``_init_visualizer`` gives the toolbox visualizer with the model's classes
  and palette, without a ``visualizer`` entry in the config.

The output files of ``tools/image_demo.py`` come from :func:`draw_result`
and :func:`result_to_json`, not from the inferencers' ``visualize`` and
``postprocess``: those name pictures after the input's extension, write
``preds/*.json`` with unthresholded label ids and no class names (mmdet) or
``*_pred.png`` without per-class pixel counts (mmseg), and draw no legend,
so each would be overridden whole.
"""
import os
import os.path as osp
from typing import (TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple,
                    Union)

import cv2
import mmcv
import numpy as np
import torch
from mmengine.structures import BaseDataElement

from .model_loading import task_scope

if TYPE_CHECKING:
    # mmengine.infer imports mmengine's runner, a second at start-up.
    from mmengine.infer import BaseInferencer

ImageType = Union[str, np.ndarray]
def _task_inferencer(model: torch.nn.Module) -> 'BaseInferencer':
    """The toolbox's inferencer around a model from :func:`init_model`.

    Args:
        model: A model from :func:`init_model`.

    Returns:
        An ``EVADetInferencer`` or ``EVASegInferencer`` (see
        :mod:`eva_mm.apis.inferencers`).
    """
    from eva_mm.apis.inferencers import EVADetInferencer, EVASegInferencer
    if task_scope(model.cfg) == 'mmseg':
        return EVASegInferencer(model)
    return EVADetInferencer(model)


def inference(
    model: torch.nn.Module, images: Union[ImageType, Sequence[ImageType]]
) -> Union[BaseDataElement, List[BaseDataElement]]:
    """Predict on one image or a list of images.

    Args:
        model: A model from :func:`init_model`.
        images: A path or a BGR array, or a list of them.

    Returns:
        A ``DetDataSample`` or ``SegDataSample`` per image; a single one for
        a single image.
    """
    batch = list(images) if isinstance(images, (list, tuple)) else [images]
    results = _task_inferencer(model)(batch, return_datasamples=True)
    # mmdet's returns them in a dict, mmseg's alone and unlisted if one.
    if isinstance(results, dict):
        results = results['predictions']
    if not isinstance(results, list):
        results = [results]
    return results if isinstance(images, (list, tuple)) else results[0]


def class_names(model: torch.nn.Module) -> Tuple[str, ...]:
    """The class names of a model's ``dataset_meta``."""
    return tuple(model.dataset_meta['classes'])


def _draw_legend(image: np.ndarray, names: Sequence[str],
                 colours: Sequence[Sequence[int]]) -> np.ndarray:
    """A white column of colour swatches and names right of an RGB image."""
    row, font = 18, cv2.FONT_HERSHEY_SIMPLEX
    width = 30 + max(
        cv2.getTextSize(name, font, 0.45, 1)[0][0] for name in names)
    height = max(image.shape[0], row * len(names) + 6)
    canvas = np.full((height, image.shape[1] + width, 3), 255, np.uint8)
    canvas[:image.shape[0], :image.shape[1]] = image
    x = image.shape[1] + 5
    for i, (name, colour) in enumerate(zip(names, colours)):
        y = 4 + i * row
        cv2.rectangle(canvas, (x, y), (x + 14, y + 14),
                      tuple(int(c) for c in colour), -1)
        cv2.putText(canvas, name, (x + 20, y + 12), font, 0.45, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return canvas


def _upscale(maps: torch.Tensor, zoom: int) -> torch.Tensor:
    """(N, H, W) maps enlarged ``zoom`` times by repeating pixels.

    Unlike ``F.interpolate``, this takes an empty stack (an image without
    detections) and keeps integer labels exact.
    """
    return maps.repeat_interleave(zoom, dim=1).repeat_interleave(zoom, dim=2)


def draw_result(model: torch.nn.Module,
                image: ImageType,
                result: BaseDataElement,
                out_file: Optional[str] = None,
                score_thr: float = 0.3,
                zoom: int = 1) -> np.ndarray:
    """Draw a prediction over its image.

    Detections are drawn by mmdet's ``DetLocalVisualizer`` (boxes, masks,
    class names and scores); segmentations by mmseg's ``SegLocalVisualizer``
    as an overlay, with a legend of the classes present.

    Args:
        model: The model that made ``result``.
        image: The image, as a path or a BGR array.
        result: The ``DetDataSample`` or ``SegDataSample`` of ``image``.
        out_file: Where to write the picture; ``None`` writes nothing.
        score_thr: Detections scoring below this are not drawn.
        zoom: Integer upscaling of the picture, for legible labels on small
            images.

    Returns:
        The picture, RGB.
    """
    rgb = mmcv.imread(image, channel_order='rgb') if isinstance(
        image, str) else mmcv.bgr2rgb(image)
    rgb = mmcv.imrescale(rgb, zoom, interpolation='nearest')
    result = result.clone()
    visualizer = _task_inferencer(model).visualizer
    if task_scope(model.cfg) == 'mmdet':
        pred = result.pred_instances
        pred.bboxes = pred.bboxes * zoom
        if 'masks' in pred:
            pred.masks = _upscale(pred.masks, zoom)
        visualizer.add_datasample(
            'image', rgb, data_sample=result, draw_gt=False,
            pred_score_thr=score_thr)
        picture = visualizer.get_image()
    else:
        labels = result.pred_sem_seg.data
        result.pred_sem_seg.data = _upscale(labels, zoom)
        # mmseg writes class names inside the regions, where they overlap on
        # small or fragmented ones; a legend beside the image stays legible.
        visualizer.add_datasample(
            'image', rgb, data_sample=result, draw_gt=False,
            with_labels=False)
        present = torch.unique(labels).tolist()
        names, palette = class_names(model), model.dataset_meta['palette']
        picture = _draw_legend(visualizer.get_image(),
                               [names[i] for i in present],
                               [palette[i] for i in present])
    if out_file is not None:
        mmcv.imwrite(mmcv.rgb2bgr(picture), out_file)
    return picture


def result_to_json(result: BaseDataElement,
                   class_names: Sequence[str],
                   score_thr: float = 0.3,
                   label_file: Optional[str] = None) -> Dict[str, object]:
    """A prediction as plain JSON-serialisable data.

    Args:
        result: A ``DetDataSample`` or ``SegDataSample``.
        class_names: Names of the model's classes, by label.
        score_thr: Detections scoring below this are left out.
        label_file: For segmentation, where to write the label map as a PNG
            (uint8, or uint16 beyond 256 classes); ``None`` writes nothing.

    Returns:
        For detection ``{'instances': [...]}``, each instance with ``bbox``
        ``[x1, y1, x2, y2]``, ``score``, ``label``, ``class_name`` and, for
        mask models, ``mask`` as COCO RLE. For segmentation
        ``{'pixel_counts': {class_name: pixels}, 'label_file': path}``.
    """
    if 'pred_sem_seg' in result:
        labels = result.pred_sem_seg.data[0].cpu().numpy()
        ids, counts = np.unique(labels, return_counts=True)
        if label_file is not None:
            dtype = np.uint8 if len(class_names) <= 256 else np.uint16
            os.makedirs(osp.dirname(osp.abspath(label_file)), exist_ok=True)
            cv2.imwrite(label_file, labels.astype(dtype))
        return dict(
            pixel_counts={
                class_names[i]: int(n)
                for i, n in zip(ids.tolist(), counts.tolist())
            },
            label_file=label_file)
    from pycocotools import mask as mask_utils
    pred = result.pred_instances
    keep = pred.scores >= score_thr
    bboxes = pred.bboxes[keep].cpu().tolist()
    scores = pred.scores[keep].cpu().tolist()
    labels = pred.labels[keep].cpu().tolist()
    masks = pred.masks[keep].cpu().numpy() if 'masks' in pred else None
    instances = []
    for i, (bbox, score, label) in enumerate(zip(bboxes, scores, labels)):
        instance = dict(
            bbox=bbox, score=score, label=label,
            class_name=class_names[label])
        if masks is not None:
            rle = mask_utils.encode(np.asfortranarray(masks[i], np.uint8))
            # pycocotools gives bytes, which JSON cannot hold.
            instance['mask'] = dict(
                size=[int(s) for s in rle['size']],
                counts=rle['counts'].decode('ascii'))
        instances.append(instance)
    return dict(instances=instances)
