"""Checkpoint conversion: one module per source family, one registry.

Importing this package registers every ``--src-format`` of
``tools/model_converters/convert_eva.py`` in :data:`SRC_FORMATS`. A new
source family is a module here that decorates its converters with
:func:`register_src_format` and is imported below; ``backbone.py`` holds
what the formats that write EVAViT weights share.
"""
from . import detectron2_detector  # noqa: F401  (official-det)
from . import eva01_backbone  # noqa: F401  (official, timm)
from . import eva01_video  # noqa: F401  (official-video)
from . import eva02_backbone  # noqa: F401  (official-eva02, timm-eva02)
from . import eva02_detector  # noqa: F401  (official-eva02-det)
from . import eva02_segmentor  # noqa: F401  (official-eva02-seg)
from . import eva_clip  # noqa: F401  (official-clip)
from . import mmseg_segmentor  # noqa: F401  (official-seg)
from ..registry import (SRC_FORMATS, Conversion, SourceFormat,
                        add_argument_once, check_fits_config,
                        register_src_format, save_converted)

__all__ = [
    'SRC_FORMATS', 'Conversion', 'SourceFormat', 'add_argument_once',
    'check_fits_config', 'register_src_format', 'save_converted'
]
