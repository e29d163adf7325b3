"""Clip-level colour transforms for mmaction2 pipelines.

The official EVA-01 video recipe (an X-CLIP derivative) applies colour jitter
with a hue term and random grayscale (``AUG.GRAY_SCALE 0.2``). mmaction2 1.2
lacks the second and its hue shift fails under NumPy 2; these transforms fill
both gaps. Both work on ``results['imgs']`` as mmaction2 holds it after
decoding: a list of (H, W, 3) uint8 frames in RGB order (``DecordDecode``,
``PyAVDecode`` and ``RawFrameDecode`` all hand out RGB, as does
``eva_mm.VideoDecode``).
"""
from typing import Dict, Sequence, Tuple, Union

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
    """mmaction2's ``ColorJitter``, a working hue shift, per-frame draws.

    Hue: mmaction2 1.2 computes ``hsv[..., 0] + int(factor * 255)`` on the
    uint8 HSV array. Under NumPy 2 (NEP 50) a negative offset is a Python int
    that uint8 cannot hold, so any negative hue draw raises
    ``OverflowError``; under NumPy 1 a large positive offset wraps at 256
    before the ``% 180``, giving a wrong hue. It also scales the factor by
    255 on OpenCV's 0..179 hue axis, so a factor of 0.1 turned the hue by 51
    degrees, not 36. Here the shift is done in int16 and the factor is a
    fraction of the hue circle, as in torchvision's ``ColorJitter`` that the
    official recipe uses: ``hue=0.1`` turns the hue by up to +-36 degrees.

    Per-frame draws: the official recipe applies torchvision's
    ``ColorJitter(0.4, 0.4, 0.2, 0.1)`` to every frame of a clip in turn
    (``EVA-01/video/datasets/pipeline.py:1772-1786``), and torchvision draws
    new factors and a new order of the four adjustments at every call, so
    the frames of a clip are jittered independently. ``per_frame=True`` does
    that; like torchvision on 8-bit images, each adjustment's result is
    clipped to [0, 255] before the next one. ``per_frame=False`` is
    mmaction2's: one draw for the whole clip, in an order fixed when the
    transform is built. The probability of jittering at all (0.8, decided
    once per clip in the official code) belongs to a ``RandomApply`` around
    this transform.

    Args:
        brightness: Factor range ``(1 - b, 1 + b)``, or a (min, max) pair.
        contrast: Factor range ``(1 - c, 1 + c)``, or a (min, max) pair.
        saturation: Factor range ``(1 - s, 1 + s)``, or a (min, max) pair.
        hue: Shift range ``(-h, h)`` in fractions of the hue circle
            (at most 0.5), or a (min, max) pair.
        per_frame: Draw factors and order for every frame (official) rather
            than once per clip (mmaction2).
    """

    def __init__(self,
                 brightness: Union[float, Tuple[float, float]] = 0.5,
                 contrast: Union[float, Tuple[float, float]] = 0.5,
                 saturation: Union[float, Tuple[float, float]] = 0.5,
                 hue: Union[float, Tuple[float, float]] = 0.1,
                 per_frame: bool = False) -> None:
        super().__init__(brightness, contrast, saturation, hue)
        self.per_frame = per_frame

    def draw(self) -> Tuple[np.ndarray, Tuple[float, float, float, float]]:
        """One torchvision-style draw: an order and the four factors.

        Returns:
            A permutation of the adjustments (0 brightness, 1 contrast,
            2 saturation, 3 hue) and the (b, c, s, h) factors.
        """
        order = np.random.permutation(4)
        factors = tuple(
            float(np.random.uniform(low, high))
            for low, high in (self.brightness, self.contrast, self.saturation,
                              self.hue))
        return order, factors

    def jitter(self, img: np.ndarray, order: Sequence[int],
               factors: Sequence[float]) -> np.ndarray:
        """Apply the adjustments in ``order``, clipping after each.

        Args:
            img: An (H, W, 3) RGB frame.
            order: The order of the adjustments (ids as in :meth:`draw`).
            factors: Brightness, contrast, saturation and hue factors.

        Returns:
            The (H, W, 3) uint8 frame.
        """
        out = img.astype(np.float32)
        brightness, contrast, saturation, hue = factors
        for fn_id in order:
            # Neutral factors (a zero-width range) change nothing: skipped.
            if fn_id == 0 and brightness != 1:
                out = np.clip(out * brightness, 0, 255)
            elif fn_id == 1 and contrast != 1:
                out = np.clip(self.adjust_contrast(out, contrast), 0, 255)
            elif fn_id == 2 and saturation != 1:
                out = np.clip(self.adjust_saturation(out, saturation), 0, 255)
            elif fn_id == 3 and hue != 0:
                out = self.adjust_hue(out, hue)
        return np.rint(out).astype(np.uint8)

    def transform(self, results: Dict) -> Dict:
        """Jitter ``results['imgs']``.

        Args:
            results: The pipeline's result dict, ``imgs`` a list of
                (H, W, 3) RGB frames.

        Returns:
            ``results`` with the jittered uint8 frames.
        """
        if not self.per_frame:
            return super().transform(results)
        results['imgs'] = [
            self.jitter(img, *self.draw()) for img in results['imgs']
        ]
        return results

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
