"""mmdet's and mmseg's inferencers on a model from
:func:`eva_mm.apis.init_model`; what is overridden and why is told at the
top of :mod:`eva_mm.apis.inference`, which imports this module (and so mmdet
and mmseg) only when a model runs.

As the toolboxes' inferencers, they take a model-zoo name
(``EVADetInferencer(model='eva02-l-p16_cascade-mask-rcnn_lsj-1536_coco')``),
or a config and ``weights`` (a file, URL or zoo name, in eva_mm's layout or
a released one), besides a model :func:`~eva_mm.apis.init_model` built.
"""
import copy
from typing import Optional, Sequence, Union

import torch
from mmdet.apis import DetInferencer
from mmdet.utils import get_test_pipeline_cfg
from mmdet.visualization import DetLocalVisualizer
from mmengine.config import Config
from mmengine.dataset import Compose
from mmengine.device import get_device
from mmengine.visualization import Visualizer
from mmseg.apis import MMSegInferencer
from mmseg.visualization import SegLocalVisualizer

from .model_loading import init_model


class _OnBuiltModel:
    """What both inferencers override: the model comes built and strictly
    loaded, and the test pipeline goes without ``LoadAnnotations``.

    Args:
        model: A model from :func:`eva_mm.apis.init_model`, or what that
            takes as ``config``: a config file, a loaded config or a
            model-zoo name.
        weights: The checkpoint of a config (a file, an ``http(s)://`` URL
            or a zoo name); a zoo name's default is its official file.
        device: Where to build the model; ``None`` picks the best
            available, as the toolboxes' inferencers do.
        checkpoint_format: See :func:`eva_mm.apis.init_model`.
        allow_partial_load: See :func:`eva_mm.apis.init_model`.
    """

    def __init__(self,
                 model: Union[torch.nn.Module, str, Config],
                 weights: Optional[str] = None,
                 device: Optional[str] = None,
                 checkpoint_format: Optional[str] = None,
                 allow_partial_load: bool = False) -> None:
        if not isinstance(model, torch.nn.Module):
            model = init_model(
                model, weights, device=device or get_device(),
                allow_partial_load=allow_partial_load,
                checkpoint_format=checkpoint_format)
        self._model = model
        super().__init__(model.cfg)
        # mmseg's __init__ sets the visualizer's classes (Cityscapes' when
        # given none); the model's are the ones it predicts.
        self.visualizer.dataset_meta = model.dataset_meta
        self.show_progress = False

    def _init_model(self, cfg: Config, weights: Optional[str],
                    device: str) -> torch.nn.Module:
        return self._model

    def _init_pipeline(self, cfg: Config) -> Compose:
        steps = [
            copy.deepcopy(step) for step in self._test_pipeline(cfg)
            if step['type'] not in ('LoadAnnotations', 'mmdet.LoadAnnotations')
        ]
        # Where the toolboxes' _init_pipeline reads it.
        return super()._init_pipeline(
            Config(dict(test_dataloader=dict(dataset=dict(pipeline=steps)))))


class EVADetInferencer(_OnBuiltModel, DetInferencer):
    """mmdet's ``DetInferencer`` on an already loaded detector."""

    def _test_pipeline(self, cfg: Config) -> Sequence[dict]:
        return get_test_pipeline_cfg(cfg)

    def _init_visualizer(self, cfg: Config) -> Visualizer:
        return DetLocalVisualizer(name='eva_mm_det', line_width=2)


class EVASegInferencer(_OnBuiltModel, MMSegInferencer):
    """mmseg's ``MMSegInferencer`` on an already loaded segmentor."""

    def _test_pipeline(self, cfg: Config) -> Sequence[dict]:
        # Where mmseg's inference_model reads it.
        return cfg.test_pipeline

    def _init_visualizer(self, cfg: Config) -> Visualizer:
        return SegLocalVisualizer(name='eva_mm_seg', alpha=0.6)
