"""eva_mm.RandomGrayscale and eva_mm.ColorJitter on mmaction2-style clips."""
import colorsys
from typing import Dict, List

import numpy as np
import pytest
from mmaction.datasets.transforms import ColorJitter as MMActionColorJitter

from eva_mm.datasets import ColorJitter, RandomGrayscale
from eva_mm.registry import TRANSFORMS

# OpenCV keeps hue in 2-degree steps and S, V in 1/255 steps; one step of
# hue moves a channel of a fully saturated pixel by 255 * 6 * 2 / 360 = 8.5
# levels, and the RGB -> HSV -> RGB trip rounds twice, so a channel may be
# off the exact hue shift by up to 9 levels.
HUE_TOLERANCE = 9.0


def _clip(seed: int, frames: int = 4, size: int = 6) -> List[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            for _ in range(frames)]


def _results(imgs: List[np.ndarray]) -> Dict:
    return dict(imgs=[img.copy() for img in imgs])


def test_transforms_build_from_scoped_names():
    assert isinstance(
        TRANSFORMS.build(dict(type='eva_mm.RandomGrayscale')),
        RandomGrayscale)
    jitter = TRANSFORMS.build(dict(type='eva_mm.ColorJitter', hue=0.1))
    assert isinstance(jitter, MMActionColorJitter)
    assert jitter.hue == (-0.1, 0.1)


def test_grayscale_is_hand_computed_luma():
    # Pure red, green, blue, white, black and one mixed RGB pixel: BT.601
    # luma 0.299 R + 0.587 G + 0.114 B, rounded (the mixed pixel: 2.99 +
    # 117.4 + 4.56 = 124.95 -> 125).
    frame = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]],
                      [[255, 255, 255], [0, 0, 0], [10, 200, 40]]],
                     dtype=np.uint8)
    expected = np.array([[76, 150, 29], [255, 0, 125]], dtype=np.uint8)
    out = RandomGrayscale(prob=1.0).transform(
        _results([frame, frame[::-1]]))['imgs']
    for img, luma in zip(out, [expected, expected[::-1]]):
        assert img.dtype == np.uint8 and img.shape == (2, 3, 3)
        np.testing.assert_array_equal(img, np.repeat(luma[..., None], 3, -1))


def test_grayscale_prob_zero_keeps_clip_and_one_always_grays():
    np.random.seed(0)
    clip = _clip(0)
    for _ in range(50):
        kept = RandomGrayscale(prob=0.0).transform(_results(clip))['imgs']
        for img, orig in zip(kept, clip):
            np.testing.assert_array_equal(img, orig)
        grayed = RandomGrayscale(prob=1.0).transform(_results(clip))['imgs']
        for img in grayed:
            assert (img == img[..., :1]).all()


def test_grayscale_decides_once_per_clip():
    np.random.seed(1)
    transform = RandomGrayscale(prob=0.5)
    outcomes = []
    for seed in range(40):
        clip = _clip(seed)
        out = transform.transform(_results(clip))['imgs']
        gray = [bool((img == img[..., :1]).all()) for img in out]
        untouched = [np.array_equal(img, orig)
                     for img, orig in zip(out, clip)]
        # Every frame gray, or every frame as it was: never a mix.
        assert all(gray) or all(untouched)
        outcomes.append(all(gray))
    assert any(outcomes) and not all(outcomes)


def test_grayscale_rejects_bad_prob():
    with pytest.raises(ValueError):
        RandomGrayscale(prob=1.5)


def test_stock_hue_shift_overflows_and_ours_does_not():
    # The cause being fixed: a negative offset added to a uint8 array.
    img = np.full((2, 2, 3), 128, dtype=np.float32)
    with pytest.raises(OverflowError):
        MMActionColorJitter.adjust_hue(img, -0.1)
    ColorJitter.adjust_hue(img, -0.1)


def test_color_jitter_never_raises_on_random_and_extreme_clips():
    np.random.seed(2)
    rng = np.random.default_rng(2)
    transform = ColorJitter(hue=0.5)
    extremes = [np.zeros((5, 5, 3), np.uint8),
                np.full((5, 5, 3), 255, np.uint8),
                rng.choice([0, 255], (5, 5, 3)).astype(np.uint8)]
    for i in range(200):
        clip = extremes if i % 4 == 0 else _clip(i, frames=3, size=5)
        out = transform.transform(_results(clip))['imgs']
        assert len(out) == len(clip)
        assert all(img.dtype == np.uint8 and img.shape == clip[0].shape
                   for img in out)
    for factor in (-0.5, -0.25, -1 / 360, 1 / 360, 0.25, 0.5):
        for img in extremes:
            ColorJitter.adjust_hue(img, factor)


def _colorsys_hue_shift(img: np.ndarray, factor: float) -> np.ndarray:
    """Shift the hue of RGB pixels with colorsys, in floating point."""
    out = np.empty(img.shape, dtype=np.float64)
    for index in np.ndindex(img.shape[:2]):
        h, s, v = colorsys.rgb_to_hsv(*(img[index] / 255.0))
        out[index] = colorsys.hsv_to_rgb((h + factor) % 1.0, s, v)
    return out * 255.0


@pytest.mark.parametrize('factor', [-0.5, -0.3, -0.1, -0.02, 0.02, 0.1,
                                    0.3, 0.5])
def test_hue_shift_matches_colorsys(factor):
    img = _clip(3, frames=1, size=12)[0]
    out = ColorJitter.adjust_hue(img, factor)
    ref = _colorsys_hue_shift(img, factor)
    assert out.dtype == np.float32
    assert np.abs(out - ref).max() <= HUE_TOLERANCE
    # mmaction2's factor * 255 scale would be off by tens of levels here.
    assert np.abs(out - ref).mean() < 2.0


def test_hue_shift_of_primaries_is_exact():
    # A third of the circle takes red to green to blue to red.
    frame = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    out = ColorJitter.adjust_hue(frame, 1 / 3)
    np.testing.assert_array_equal(out, frame[:, [1, 2, 0]])
    np.testing.assert_array_equal(
        ColorJitter.adjust_hue(frame, -1 / 3), frame[:, [2, 0, 1]])
