"""Loading and meta-device building shared by the paper-config tests."""
from pathlib import Path

import torch
from mmengine.config import Config
from mmengine.registry import Registry, init_default_scope


def load_config(config_dir: Path, name: str) -> Config:
    """Reads the merged config ``config_dir/name.py``.

    Args:
        config_dir: The folder of the config.
        name: The config's file name without ``.py``.

    Returns:
        The config with every base merged in.
    """
    return Config.fromfile(str(config_dir / f'{name}.py'))


def build_on_meta(cfg: Config, registry: Registry) -> torch.nn.Module:
    """Builds ``cfg.model`` at full size without memory or initialisation.

    Args:
        cfg: A config whose ``model`` the registry builds.
        registry: The toolbox's ``MODELS``; its scope becomes the default
            scope, as the toolbox's runner would make it.

    Returns:
        The model, every parameter and buffer on the meta device.
    """
    init_default_scope(registry.scope)
    with torch.device('meta'):
        return registry.build(cfg.model)
