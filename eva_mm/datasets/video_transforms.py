"""Clip-level colour transforms for mmaction2 pipelines.

The official EVA-01 video recipe (an X-CLIP derivative) applies colour jitter
with a hue term and random grayscale (``AUG.GRAY_SCALE 0.2``). mmaction2 1.2
lacks the second and its hue shift fails under NumPy 2; these transforms fill
both gaps. Both work on ``results['imgs']`` as mmaction2 holds it after
decoding: a list of (H, W, 3) uint8 frames in RGB order (``DecordDecode``,
``PyAVDecode`` and ``RawFrameDecode`` all hand out RGB, as does
``eva_mm.VideoDecode``).
"""
from typing import Dict

import cv2
import numpy as np
from mmaction.datasets.transforms import ColorJitter as MMActionColorJitter
from mmcv.transforms import BaseTransform

from eva_mm.registry import TRANSFORMS

# ITU-R BT.601 luma weights in R, G, B order: the frames are RGB.
LUMA_601_RGB = np.array([0.299, 0.587, 0.114], dtype=np.float32)

# OpenCV stores the hue of a uint8 HSV image as degrees / 2, i.e. 0..179.
OPENCV_HUE_RANGE = 180


@TRANSFORMS.register_module()
class RandomGrayscale(BaseTransform):
    """Turn a whole clip to grayscale with probability ``prob``.

    One draw decides for the sample, so every frame of the clip is either
    grayscale or untouched; drawing per frame would make a clip flicker
    between colour and gray, which the recipe does not do. The gray value is
    the BT.601 luma of the RGB frame, rounded and repeated over the three
    channels so that later transforms and the model still see 3 channels.

    Required keys: ``imgs``. Modified keys: ``imgs``.

    Args:
        prob: Probability of turning the clip to grayscale. Defaults to 0.2,
            the official ``AUG.GRAY_SCALE``.
    """

    def __init__(self, prob: float = 0.2) -> None:
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f'prob must lie in [0, 1], got {prob}')
        self.prob = prob

    def transform(self, results: Dict) -> Dict:
        """Turn ``results['imgs']`` to grayscale or leave it as it is.

        Args:
            results: The pipeline's result dict, with ``imgs`` a list of
                (H, W, 3) uint8 RGB frames.

        Returns:
            ``results`` with ``imgs`` replaced when the clip was drawn.
        """
        # np.random, as mmaction2's transforms use, so that mmengine's seed
        # makes the draw reproducible.
        if np.random.rand() >= self.prob:
            return results
        results['imgs'] = [self._to_gray(img) for img in results['imgs']]
        return results

    @staticmethod
    def _to_gray(img: np.ndarray) -> np.ndarray:
        """Return the BT.601 luma of an RGB frame as a 3-channel uint8 frame.

        Args:
            img: An (H, W, 3) RGB frame.

        Returns:
            The (H, W, 3) uint8 frame with the luma in every channel.
        """
        luma = np.rint(img.astype(np.float32) @ LUMA_601_RGB)
        luma = np.clip(luma, 0, 255).astype(np.uint8)
        return np.repeat(luma[..., None], 3, axis=-1)

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(prob={self.prob})'


@TRANSFORMS.register_module()
class ColorJitter(MMActionColorJitter):
    """mmaction2's ``ColorJitter`` with a hue shift that cannot overflow.

    mmaction2 1.2 computes ``hsv[..., 0] + int(factor * 255)`` on the uint8
    HSV array. Under NumPy 2 (NEP 50) a negative offset is a Python int that
    uint8 cannot hold, so any negative hue draw raises ``OverflowError``;
    under NumPy 1 a large positive offset wraps at 256 before the ``% 180``,
    giving a wrong hue. It also scales the factor by 255 on OpenCV's 0..179
    hue axis, so a factor of 0.1 turned the hue by 51 degrees, not 36.

    Here the shift is done in int16 and the factor is a fraction of the hue
    circle, as in torchvision's ``ColorJitter`` that the official recipe
    uses: ``hue=0.1`` turns the hue by up to +-36 degrees. Brightness,
    contrast, saturation and the order of the four are mmaction2's.
    """

    @staticmethod
    def adjust_hue(img: np.ndarray, factor: float) -> np.ndarray:
        """Turn the hue of an RGB frame by ``factor`` of the full circle.

        Args:
            img: An (H, W, 3) RGB frame, any dtype; values are clipped to
                [0, 255] first.
            factor: The hue shift as a fraction of 360 degrees, in
                [-0.5, 0.5].

        Returns:
            The (H, W, 3) float32 RGB frame with its hue shifted.
        """
        img = np.clip(img, 0, 255).astype(np.uint8)
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        offset = int(round(factor * OPENCV_HUE_RANGE))
        # int16 holds 179 + 90 and -90 alike; the modulo brings the hue back
        # to 0..179, which fits uint8 again.
        hue = (hsv[..., 0].astype(np.int16) + offset) % OPENCV_HUE_RANGE
        hsv[..., 0] = hue.astype(np.uint8)
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB).astype(np.float32)
