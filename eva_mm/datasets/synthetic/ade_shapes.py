"""A generated semantic segmentation set in the ADE20K layout.

The segmentation configs, tests and docs need a set that mmseg's
``ADE20KDataset`` reads as it reads ADEChallengeData2016, with no download:
JPEG images, PNG label maps whose value 0 is "other" (ignored once
``reduce_zero_label`` maps it to 255) and 1..150 the classes. This module
draws one: coloured shapes on a pale texture. The class fixes both the shape
(circle, square, triangle, star by class index) and the colour, so a small
model learns it from either cue in a few iterations. Shapes may overlap; the
one drawn last owns the pixels, as in a real label map.

Every image comes from its own seeded generator, so the set is identical on
every machine and run, and nothing is redrawn when the files are already
there with the same parameters.
"""
import json
import os
import os.path as osp
import shutil
from typing import Dict, Tuple

import cv2
import numpy as np

from .shapes import CLASSES as SHAPES
from .shapes import _background, _shape_polygon

# ADE20K has 150 classes, labels 1..150 in its PNGs (0 is "other").
ADE_NUM_CLASSES = 150
META_FILE = 'demo_ade.json'
# Bump when the drawing changes so that old sets on disk are redrawn.
FORMAT_VERSION = 1
SPLITS: Tuple[Tuple[str, int], ...] = (('training', 0), ('validation', 1))
_SHIFT = 4  # cv2.fillPoly sub-pixel precision: 1/16 pixel


def class_colour(label: int) -> Tuple[int, int, int]:
    """The fixed BGR colour of class ``label`` (1-based) in the images.

    Hues step by the golden angle so that neighbouring labels differ most;
    three brightness levels separate labels whose hues come close.

    Args:
        label: A class label in 1..150.

    Returns:
        The colour as (B, G, R).
    """
    hue = (label * 0.618034 % 1.0) * 180
    value = (90, 160, 230)[label % 3]
    hsv = np.array([[[hue, 220, value]]], dtype=np.uint8)
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def _draw(rng: np.random.Generator, img_size: int, labels: np.ndarray,
          max_objects: int) -> Tuple[np.ndarray, np.ndarray]:
    """One image (BGR uint8) and its label map (uint8, 0 = other)."""
    image = _background(rng, img_size)
    label_map = np.zeros((img_size, img_size), dtype=np.uint8)
    for _ in range(int(rng.integers(1, max_objects + 1))):
        label = int(rng.choice(labels))
        radius = rng.uniform(0.15, 0.3) * img_size
        center = rng.uniform(radius, img_size - radius, size=2)
        polygon = _shape_polygon(SHAPES[(label - 1) % len(SHAPES)], center,
                                 radius, rng.uniform(0, 2 * np.pi))
        mask = np.zeros_like(label_map)
        cv2.fillPoly(mask, [np.round(polygon * 2**_SHIFT).astype(np.int32)],
                     1, lineType=cv2.LINE_8, shift=_SHIFT)
        image[mask.astype(bool)] = class_colour(label)
        label_map[mask.astype(bool)] = label
    image += rng.normal(0, 3, size=image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8), label_map


def generate_demo_ade(out_dir: str,
                      num_train: int = 40,
                      num_val: int = 8,
                      img_size: int = 96,
                      num_classes: int = ADE_NUM_CLASSES,
                      max_objects: int = 3,
                      seed: int = 0) -> Dict[str, str]:
    """Generate (or find) the demo ADE20K-format set under ``out_dir``.

    Layout, as mmseg's ``ADE20KDataset`` reads it (``data_root=out_dir``)::

        out_dir/images/{training,validation}/000000.jpg ...
        out_dir/annotations/{training,validation}/000000.png ...
        out_dir/demo_ade.json     (the parameters, written last)

    Args:
        out_dir: Where to write.
        num_train: Training images.
        num_val: Validation images.
        img_size: Side of the square images, in pixels.
        num_classes: The shapes use labels 1..``num_classes`` only (at most
            150); fewer classes make a set that a tiny model learns in a
            few iterations, while the label space stays ADE20K's.
        max_objects: Most shapes in one image (at least one each).
        seed: Seed of every random choice.

    Returns:
        The image folder of each split, keyed ``'training'``/``'validation'``.

    Raises:
        ValueError: A count or size out of range.
    """
    if min(num_train, num_val, max_objects) < 1:
        raise ValueError('num_train, num_val and max_objects must be >= 1.')
    if not 1 <= num_classes <= ADE_NUM_CLASSES:
        raise ValueError(f'num_classes must be in 1..{ADE_NUM_CLASSES} (the '
                         f'ADE20K labels), got {num_classes}.')
    if img_size < 32:
        raise ValueError(f'img_size={img_size} is too small to draw shapes; '
                         'use 32 or more.')
    params = dict(version=FORMAT_VERSION, num_train=num_train,
                  num_val=num_val, img_size=img_size,
                  num_classes=num_classes, max_objects=max_objects, seed=seed)
    img_dirs = {
        split: osp.join(out_dir, 'images', split)
        for split, _ in SPLITS
    }
    meta_path = osp.join(out_dir, META_FILE)
    if osp.isfile(meta_path):
        with open(meta_path) as f:
            if json.load(f) == params:
                return img_dirs
        # Drawn with other parameters: drop it so that no stale image
        # outlives the new set.
        for sub in ('images', 'annotations'):
            shutil.rmtree(osp.join(out_dir, sub), ignore_errors=True)
        os.remove(meta_path)
    labels = np.arange(1, num_classes + 1)
    for split, split_key in SPLITS:
        ann_dir = osp.join(out_dir, 'annotations', split)
        os.makedirs(img_dirs[split], exist_ok=True)
        os.makedirs(ann_dir, exist_ok=True)
        count = num_train if split == 'training' else num_val
        for index in range(count):
            # One stream per (split, image): the splits never share an image
            # and a longer set starts with the shorter one's images.
            rng = np.random.default_rng([seed, split_key, index])
            image, label_map = _draw(rng, img_size, labels, max_objects)
            cv2.imwrite(osp.join(img_dirs[split], f'{index:06d}.jpg'), image,
                        [cv2.IMWRITE_JPEG_QUALITY, 95])
            cv2.imwrite(osp.join(ann_dir, f'{index:06d}.png'), label_map)
    with open(meta_path, 'w') as f:
        json.dump(params, f)
    return img_dirs
