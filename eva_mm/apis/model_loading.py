"""Building a detector or segmentor and loading its weights.

:func:`init_model` takes a config or a model-zoo name, and a checkpoint
file, ``http(s)://`` URL or zoo name, in eva_mm's layout or a released
file's own (converted in memory, :mod:`eva_mm.checkpoints.recognition`). A
file in eva_mm's layout is loaded by the toolbox's own function (mmdet's
``init_detector``, mmseg's ``init_model``), as before, and checked: their
loaders only warn about missing weights, where :func:`init_model` refuses a
partial load unless ``allow_partial_load``. A converted file is loaded into
the model that function builds without weights, with the class names of the
config's test data set (official files hold none). mmdet and mmseg are
imported inside the functions so that ``import eva_mm`` stays light.
"""
import os.path as osp
from typing import Callable, Dict, Optional, Tuple, Union

import torch
from mmengine.config import Config

# The OpenMMLab libraries this module can drive, by default_scope.
SUPPORTED_SCOPES: Tuple[str, ...] = ('mmdet', 'mmseg')


def task_scope(config: Union[str, Config]) -> str:
    """The OpenMMLab library (``'mmdet'`` or ``'mmseg'``) a config is for.

    Args:
        config: A config file path or a loaded config.

    Returns:
        The config's ``default_scope``.

    Raises:
        ValueError: The scope is neither mmdet nor mmseg.
    """
    cfg = Config.fromfile(config) if isinstance(config, str) else config
    scope = cfg.get('default_scope')
    if scope not in SUPPORTED_SCOPES:
        raise ValueError(
            f'The config has default_scope={scope!r}; image inference '
            f'supports mmdet detectors and mmseg segmentors '
            f'(default_scope one of {SUPPORTED_SCOPES}).')
    return scope


# How the user names a checkpoint's format here, for messages.
FORMAT_OPTION = ('checkpoint_format=NAME (tools/image_demo.py: '
                 '--checkpoint-format NAME)')
PARTIAL_OPTION = ('allow_partial_load=True (tools/image_demo.py: '
                  '--allow-partial-load)')


def _init_task_model(cfg: Config) -> Callable[..., torch.nn.Module]:
    """mmdet's ``init_detector`` or mmseg's ``init_model``, by the config's
    scope."""
    if task_scope(cfg) == 'mmdet':
        from mmdet.apis import init_detector
        return init_detector
    from mmseg.apis import init_model as init_segmentor
    return init_segmentor


def _build_without_weights(cfg: Config, device: str) -> torch.nn.Module:
    """The toolbox's model of ``cfg``, built as its init function builds it,
    without weights."""
    import warnings
    # Recorded, not shown: "checkpoint is None, use COCO classes" (mmdet
    # sets its own filter, so 'ignore' would not hold); the caller sets the
    # classes.
    with warnings.catch_warnings(record=True):
        return _init_task_model(cfg)(cfg, None, device=device)


def _config_dataset_meta(cfg: Config) -> Dict[str, object]:
    """Class names and palette of the config's test data set, for weights
    that hold none (as mmdet's init_detector reads the palette).

    Raises:
        ValueError: The config has no test data set.
    """
    from mmengine.registry import DATASETS, DefaultScope
    if 'test_dataloader' not in cfg:
        raise ValueError(
            'The checkpoint holds no class names (official files do not) and '
            'the config has no test_dataloader to read them from: add one '
            "with the data set's metainfo.")
    dataset_cfg = dict(cfg.test_dataloader.dataset, lazy_init=True)
    with DefaultScope.overwrite_default_scope(task_scope(cfg)):
        metainfo = DATASETS.build(dataset_cfg).metainfo
    return {key.lower(): value for key, value in metainfo.items()}


def init_model(config: Union[str, Config],
               checkpoint: Optional[str] = None,
               device: str = 'cpu',
               cfg_options: Optional[dict] = None,
               allow_partial_load: bool = False,
               checkpoint_format: Optional[str] = None) -> torch.nn.Module:
    """Build a detector or segmentor from a config and load its weights.

    The checkpoint must hold every weight of the model with the model's
    shape: mmdet's and mmseg's loaders only warn about missing keys, which
    would leave random layers in a model that then predicts without error.

    Args:
        config: A config file path, a loaded config, or a model-zoo name
            (``python tools/model_zoo.py list``): its config, and its
            official file unless ``checkpoint`` is given.
        checkpoint: Weights to load: a file, an ``http(s)://`` URL or a
            model-zoo name, in eva_mm's layout or a released one; ``None``
            keeps the random init. A zoo entry of backbone weights
            (``Load: backbone``) initialises the backbone, and the rest of
            the model as a training run would start it.
        device: Where the model runs, e.g. ``'cpu'`` or ``'cuda:0'``.
        cfg_options: Overrides merged into the config.
        allow_partial_load: Accept a checkpoint that lacks weights of the
            model (or has them in another shape); they keep their
            initialisation and are logged.
        checkpoint_format: The registered format of the checkpoint, where
            neither its zoo entry nor its names tell it.

    Returns:
        The model in eval mode, with ``cfg`` and ``dataset_meta`` set.

    Raises:
        FileNotFoundError: ``config`` or ``checkpoint`` is given but is no
            file (nor URL or zoo name).
        ValueError: The config is neither an mmdet nor an mmseg one.
        CheckpointError: The checkpoint cannot be downloaded or read, or is
            refused by its format.
        CheckpointMismatchError: The checkpoint leaves model weights
            unloaded and ``allow_partial_load`` is False; it names them.
    """
    from mmengine.runner.checkpoint import load_state_dict

    from eva_mm.checkpoints.loading import load_backbone_checkpoint
    from eva_mm.checkpoints.model_check import (check_whole_model_checkpoint,
                                                check_whole_model_weights)
    from eva_mm.checkpoints.reading import load_state_dict_file
    from eva_mm.checkpoints.recognition import convert_for_model
    from eva_mm.checkpoints.registry import meta_model
    from eva_mm.checkpoints.sources import resolve_checkpoint
    from eva_mm.checkpoints.zoo import config_entry
    from eva_mm.engine.safe_checkpoint import setup_checkpoint_loading

    setup_checkpoint_loading()
    zoo = None
    if isinstance(config, str) and not osp.isfile(config):
        zoo = config_entry(config)
        config = str(zoo.config_path)
        if checkpoint is None:
            checkpoint = zoo.weights
        else:
            zoo = None  # the entry's config, another file
    cfg = Config.fromfile(config) if isinstance(config, str) else config
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    task_scope(cfg)
    if checkpoint is None:
        return _init_task_model(cfg)(cfg, None, device=device)
    source = resolve_checkpoint(checkpoint, zoo)
    if source.model is not None and source.model.load == 'backbone':
        # mmdet's init_detector drops the backbone's init_cfg: load it here.
        model = _build_without_weights(cfg, device)
        model.init_weights()
        load_backbone_checkpoint(model.backbone, checkpoint,
                                 checkpoint_format=checkpoint_format)
        model.dataset_meta = _config_dataset_meta(cfg)
        return model.eval()
    weights = convert_for_model(
        load_state_dict_file(source.path, mmap=True),
        lambda: meta_model(cfg).state_dict(), checkpoint, FORMAT_OPTION,
        checkpoint_format, source.model, cfg)
    if weights.conversion is None:
        model = _init_task_model(cfg)(cfg, str(source.path), device=device)
        check_whole_model_checkpoint(
            model, source.path, allow_partial=allow_partial_load,
            option=PARTIAL_OPTION, note=weights.note)
        return model
    model = _build_without_weights(cfg, device)
    check_whole_model_weights(model, weights.state_dict, checkpoint,
                              allow_partial_load, PARTIAL_OPTION,
                              weights.note)
    # As the unconverted path: mis-shaped entries of a partial load are
    # skipped with mmengine's warning.
    load_state_dict(model, weights.state_dict, strict=False)
    model.dataset_meta = _config_dataset_meta(cfg)
    return model
