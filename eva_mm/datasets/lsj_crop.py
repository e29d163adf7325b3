"""The large-scale-jitter crop with detectron2's crop offset."""
from typing import Tuple

import numpy as np
from mmcv.transforms.utils import cache_randomness
from mmdet.datasets.transforms import RandomCrop

from eva_mm.registry import TRANSFORMS


@TRANSFORMS.register_module()
class Detectron2RandomCrop(RandomCrop):
    """mmdet's ``RandomCrop`` with the offset of detectron2's
    ``FixedSizeCrop``.

    detectron2, whose LSJ pipeline EVA trains its detectors with, draws one
    number u ~ U[0, 1) for both axes and crops at round(margin * u)
    (``FixedSizeCrop._get_crop``, EVA-01/det/detectron2/data/transforms/
    augmentation_impl.py:320-332, line 328): the crop's corner lies on the
    diagonal from (0, 0) to (margin_h, margin_w). mmdet's ``RandomCrop``
    draws the two offsets independently, anywhere in that rectangle. Only
    the draw differs: crop size, boxes, masks, segmentation maps and the
    homography matrix are mmdet's (the same arguments; the LSJ configs use
    ``crop_type='absolute_range'`` with ``crop_size=(S, S)``, which crops
    min(side, S) per side, detectron2's ``FixedSizeCrop(pad=False)``).
    """

    @cache_randomness
    def _rand_offset(self, margin: Tuple[int, int]) -> Tuple[int, int]:
        """One uniform draw scaled by both margins, rounded (detectron2).

        Args:
            margin: The largest offsets, (margin_h, margin_w).

        Returns:
            The crop offset (offset_h, offset_w).
        """
        # np.round (half to even) and one np.random.uniform, as line 328.
        offset = np.round(np.multiply(margin, np.random.uniform(0.0, 1.0)))
        return int(offset[0]), int(offset[1])
