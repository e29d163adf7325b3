"""EVA-01's block-wise mask generator for masked image modelling."""
import math
from typing import Optional, Tuple, Union

import numpy as np
from mmcv.transforms import BaseTransform

from eva_mm.registry import TRANSFORMS


@TRANSFORMS.register_module()
class EVABlockMaskGenerator(BaseTransform):
    """Mask rectangular blocks of patches as the official EVA-01 code does.

    The algorithm of EVA-01 ``eva/masking_generator.py`` (BEiT's): each
    round draws up to 10 blocks (area uniform in ``[min_num_patches,
    patches still allowed]``, aspect ratio log-uniform in ``[min_aspect,
    max_aspect]``, height and width rounded, strictly smaller than the
    grid), placed uniformly with **inclusive** bounds (``randint(0, H - h)``,
    ``masking_generator.py:53-54``), and keeps the first one that adds
    between 1 and the allowed number of new patches. Rounds repeat until
    ``num_masking_patches`` are masked or a round adds nothing
    (``masking_generator.py:72-78``), so a mask holds at most
    ``num_masking_patches`` patches, a few less on average (about 104 of
    105 on EVA's 16x16 grid).

    mmpretrain's ``BEiTMaskGenerator`` is not used: it places blocks with an
    exclusive upper bound, so the last patch row and column are never
    masked (31 of 256 positions never get a target), and it loops until the
    count is exact.

    Draws come from NumPy's global generator, which mmengine seeds per run,
    rank and dataloader worker (the official code uses Python's ``random``,
    seeded the same way by its launcher).

    Added keys:

    - mask: (H, W) int array, 1 where the patch is masked.

    Args:
        input_size: The patch grid, an int for a square one or (H, W).
        num_masking_patches: The most patches a mask holds (105 for EVA-01:
            40% of 16x16).
        min_num_patches: The smallest block area drawn (16 for EVA-01).
        max_num_patches: The largest block area; ``None`` is
            ``num_masking_patches``.
        min_aspect: The smallest height/width ratio of a block.
        max_aspect: The largest ratio; ``None`` is ``1 / min_aspect``.
    """

    MAX_ATTEMPTS = 10  # masking_generator.py:47

    def __init__(self,
                 input_size: Union[int, Tuple[int, int]],
                 num_masking_patches: int,
                 min_num_patches: int = 4,
                 max_num_patches: Optional[int] = None,
                 min_aspect: float = 0.3,
                 max_aspect: Optional[float] = None) -> None:
        if isinstance(input_size, int):
            input_size = (input_size, input_size)
        self.height, self.width = (int(s) for s in input_size)
        if not 0 < num_masking_patches <= self.height * self.width:
            raise ValueError(
                f'num_masking_patches={num_masking_patches} must be in 1..'
                f'{self.height * self.width} for a {self.height}x'
                f'{self.width} grid.')
        if min_aspect <= 0:
            raise ValueError(f'min_aspect must be positive, got {min_aspect}.')
        self.num_masking_patches = num_masking_patches
        self.min_num_patches = min_num_patches
        self.max_num_patches = (num_masking_patches if max_num_patches is None
                                else max_num_patches)
        max_aspect = max_aspect or 1 / min_aspect
        self.log_aspect_ratio = (math.log(min_aspect), math.log(max_aspect))

    def _add_block(self, mask: np.ndarray, max_mask_patches: int) -> int:
        """Try up to 10 blocks; keep the first that adds allowed patches.

        Args:
            mask: The (H, W) mask, updated in place.
            max_mask_patches: The most new patches a block may add.

        Returns:
            The number of patches added (0 when every attempt failed).
        """
        for _ in range(self.MAX_ATTEMPTS):
            target_area = np.random.uniform(self.min_num_patches,
                                            max_mask_patches)
            aspect_ratio = math.exp(np.random.uniform(*self.log_aspect_ratio))
            h = int(round(math.sqrt(target_area * aspect_ratio)))
            w = int(round(math.sqrt(target_area / aspect_ratio)))
            if w >= self.width or h >= self.height:
                continue
            # numpy's high is exclusive: H - h + 1 gives the official
            # random.randint(0, H - h), both ends included.
            top = np.random.randint(0, self.height - h + 1)
            left = np.random.randint(0, self.width - w + 1)
            block = mask[top:top + h, left:left + w]
            added = h * w - int(block.sum())
            if 0 < added <= max_mask_patches:
                block[...] = 1
                return added
        return 0

    def generate(self) -> np.ndarray:
        """One mask.

        Returns:
            The (H, W) int mask.
        """
        mask = np.zeros((self.height, self.width), dtype=int)
        count = 0
        while count < self.num_masking_patches:
            allowed = min(self.num_masking_patches - count,
                          self.max_num_patches)
            added = self._add_block(mask, allowed)
            if added == 0:
                break
            count += added
        return mask

    def transform(self, results: dict) -> dict:
        """Add a fresh ``mask`` to ``results``.

        Args:
            results: The pipeline's result dict.

        Returns:
            ``results`` with ``mask``.
        """
        results['mask'] = self.generate()
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(input_size=({self.height}, '
                f'{self.width}), num_masking_patches='
                f'{self.num_masking_patches}, min_num_patches='
                f'{self.min_num_patches}, max_num_patches='
                f'{self.max_num_patches}, log_aspect_ratio='
                f'{self.log_aspect_ratio})')
