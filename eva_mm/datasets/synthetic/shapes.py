"""A generated COCO-format instance segmentation set of coloured shapes.

The demo and the tests need a detection data set that is small, needs no
download and can be learnt from scratch on a CPU in minutes. This module
draws it: a few large, non-overlapping shapes (circle, square, triangle,
star) of random colour, size and rotation on a smooth low-contrast texture,
with exact polygon masks. Colour is independent of the class, so the model
must learn shapes, not colours.

Every image comes from its own seeded generator, so the set is the same on
every machine and every run, and regeneration is skipped when the files are
already there with the same parameters.
"""
import json
import os
import os.path as osp
import shutil
from typing import Dict, List, Tuple

import cv2
import numpy as np
from pycocotools import mask as mask_utils

CLASSES: Tuple[str, ...] = ('circle', 'square', 'triangle', 'star')
# One colour per class for drawing predictions; the images use random ones.
PALETTE: Tuple[Tuple[int, int, int], ...] = ((220, 20, 60), (0, 130, 230),
                                            (30, 170, 60), (250, 170, 30))
META_FILE = 'demo_shapes.json'
# Bump when the drawing changes so that old sets on disk are redrawn.
FORMAT_VERSION = 1

# Sub-pixel precision of cv2.fillPoly: coordinates in 1/16 pixel.
_SHIFT = 4
# Gap between shapes, in pixels, so that every instance is separable.
_MARGIN = 4


def _shape_polygon(name: str, center: np.ndarray, radius: float,
                   angle: float) -> np.ndarray:
    """The (K, 2) outline of one shape with circumradius ``radius``."""
    if name == 'circle':
        # 48 vertices are within 0.3% of a true circle at these radii.
        theta = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        radii = np.full_like(theta, radius)
    elif name == 'star':
        theta = angle + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, radius, 0.45 * radius)
    else:
        corners = 4 if name == 'square' else 3
        theta = angle + np.arange(corners) * 2 * np.pi / corners
        radii = np.full_like(theta, radius)
    return center + np.stack([radii * np.cos(theta), radii * np.sin(theta)],
                             axis=1)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth, pale, low-contrast colour texture as float (H, W, 3)."""
    coarse = rng.uniform(150, 230, size=(4, 4, 3)).astype(np.float32)
    texture = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    # Desaturate towards grey so that saturated shapes stand out.
    grey = texture.mean(axis=2, keepdims=True)
    return 0.5 * texture + 0.5 * grey


def _shape_colour(rng: np.random.Generator) -> np.ndarray:
    """A saturated colour of random hue and darkness, as float BGR."""
    hsv = np.array([[[rng.uniform(0, 180),
                      rng.uniform(150, 255),
                      rng.uniform(40, 200)]]], dtype=np.float32)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)[0, 0].astype(
        np.float32)


def _draw_image(rng: np.random.Generator, img_size: int,
                max_objects: int) -> Tuple[np.ndarray, List[dict]]:
    """One image and its objects (class index and polygon)."""
    canvas = _background(rng, img_size)
    num_objects = int(rng.integers(1, max_objects + 1))
    placed: List[Tuple[np.ndarray, float]] = []
    objects = []
    # Rejection sampling of non-overlapping discs that enclose the shapes;
    # a crowded image simply gets fewer shapes.
    for _ in range(num_objects * 20):
        if len(objects) == num_objects:
            break
        radius = rng.uniform(0.12, 0.25) * img_size
        center = rng.uniform(radius + 1, img_size - radius - 1, size=2)
        if any(
                np.linalg.norm(center - other) < radius + other_radius +
                _MARGIN for other, other_radius in placed):
            continue
        label = int(rng.integers(len(CLASSES)))
        polygon = _shape_polygon(CLASSES[label], center, radius,
                                 rng.uniform(0, 2 * np.pi))
        placed.append((center, radius))
        objects.append(dict(label=label, polygon=polygon))
        mask = np.zeros((img_size, img_size), dtype=np.uint8)
        cv2.fillPoly(mask, [np.round(polygon * 2**_SHIFT).astype(np.int32)],
                     1, lineType=cv2.LINE_8, shift=_SHIFT)
        canvas[mask.astype(bool)] = _shape_colour(rng)
    canvas += rng.normal(0, 3, size=canvas.shape).astype(np.float32)
    return np.clip(canvas, 0, 255).astype(np.uint8), objects


def _annotation(obj: dict, ann_id: int, image_id: int,
                img_size: int) -> dict:
    """The COCO annotation of one drawn object."""
    polygon = obj['polygon']
    flat = [round(float(v), 2) for v in polygon.reshape(-1)]
    rle = mask_utils.merge(mask_utils.frPyObjects([flat], img_size,
                                                  img_size))
    x0, y0 = polygon.min(axis=0)
    x1, y1 = polygon.max(axis=0)
    return dict(
        id=ann_id,
        image_id=image_id,
        category_id=obj['label'] + 1,
        segmentation=[flat],
        area=float(mask_utils.area(rle)),
        bbox=[
            round(float(x0), 2),
            round(float(y0), 2),
            round(float(x1 - x0), 2),
            round(float(y1 - y0), 2)
        ],
        iscrowd=0)


def _write_split(out_dir: str, split: str, num_images: int, img_size: int,
                 seed: int, max_objects: int) -> None:
    """Draw one split's images and write its COCO annotation file."""
    img_dir = osp.join(out_dir, split)
    os.makedirs(img_dir, exist_ok=True)
    images, annotations = [], []
    # A distinct stream per split and image: changing the number of images
    # keeps the others unchanged, and the splits never share an image.
    split_key = 0 if split == 'train' else 1
    for index in range(num_images):
        rng = np.random.default_rng([seed, split_key, index])
        image, objects = _draw_image(rng, img_size, max_objects)
        file_name = f'{index:06d}.png'
        cv2.imwrite(osp.join(img_dir, file_name), image)
        image_id = index + 1
        images.append(
            dict(
                id=image_id,
                file_name=file_name,
                height=img_size,
                width=img_size))
        for obj in objects:
            annotations.append(
                _annotation(obj,
                            len(annotations) + 1, image_id, img_size))
    coco = dict(
        images=images,
        annotations=annotations,
        categories=[
            dict(id=i + 1, name=name, supercategory='shape')
            for i, name in enumerate(CLASSES)
        ])
    ann_dir = osp.join(out_dir, 'annotations')
    os.makedirs(ann_dir, exist_ok=True)
    with open(osp.join(ann_dir, f'instances_{split}.json'), 'w') as f:
        json.dump(coco, f)


def generate_demo_shapes(out_dir: str,
                         num_train: int = 2000,
                         num_val: int = 100,
                         img_size: int = 128,
                         seed: int = 0,
                         max_objects: int = 3) -> Dict[str, str]:
    """Generate (or find) the demo shapes set under ``out_dir``.

    Layout, as mmdet's ``CocoDataset`` reads it::

        out_dir/train/000000.png ...
        out_dir/val/000000.png ...
        out_dir/annotations/instances_{train,val}.json
        out_dir/demo_shapes.json      (the parameters, written last)

    Args:
        out_dir: Where to write.
        num_train: Training images.
        num_val: Validation images.
        img_size: Side of the square images, in pixels.
        seed: Seed of every random choice.
        max_objects: Most shapes in one image (at least one each).

    Returns:
        The paths of the two annotation files, keyed ``'train'``/``'val'``.
    """
    if min(num_train, num_val, max_objects) < 1:
        raise ValueError('num_train, num_val and max_objects must be >= 1.')
    if img_size < 32:
        raise ValueError(f'img_size={img_size} is too small to draw shapes.')
    params = dict(
        version=FORMAT_VERSION,
        num_train=num_train,
        num_val=num_val,
        img_size=img_size,
        seed=seed,
        max_objects=max_objects)
    ann_files = {
        split: osp.join(out_dir, 'annotations', f'instances_{split}.json')
        for split in ('train', 'val')
    }
    meta_path = osp.join(out_dir, META_FILE)
    if osp.isfile(meta_path):
        with open(meta_path) as f:
            if json.load(f) == params and all(
                    osp.isfile(path) for path in ann_files.values()):
                return ann_files
        # A set this function drew with other parameters: drop it so that
        # no stale image outlives the new annotations.
        for sub in ('train', 'val', 'annotations'):
            shutil.rmtree(osp.join(out_dir, sub), ignore_errors=True)
        os.remove(meta_path)
    _write_split(out_dir, 'train', num_train, img_size, seed, max_objects)
    _write_split(out_dir, 'val', num_val, img_size, seed, max_objects)
    with open(meta_path, 'w') as f:
        json.dump(params, f)
    return ann_files



def _lvis_frequency(image_count: int) -> str:
    """LVIS's frequency group of a category from its training image count."""
    if image_count > 100:
        return 'f'
    return 'c' if image_count > 10 else 'r'


def generate_demo_lvis(out_dir: str, **kwargs) -> Dict[str, str]:
    """The demo shapes set with LVIS v1 annotation files beside COCO's.

    The images and instances are those of :func:`generate_demo_shapes`; the
    LVIS files add what LVIS v1 has and COCO has not: per category the
    training ``image_count``, ``instance_count`` and ``frequency`` group
    (``'r'`` up to 10 images, ``'c'`` up to 100, ``'f'`` above), which
    repeat factor sampling, the federated loss and the LVIS metric read, and
    per image the ``neg_category_ids`` (categories verified absent: every
    shape class not drawn in it) and ``not_exhaustive_category_ids`` (none:
    every drawn shape is annotated)::

        out_dir/annotations/lvis_v1_{train,val}.json

    Args:
        out_dir: Where to write.
        **kwargs: :func:`generate_demo_shapes` arguments.

    Returns:
        The paths of the two LVIS annotation files, keyed ``'train'`` and
        ``'val'``.
    """
    coco_files = generate_demo_shapes(out_dir, **kwargs)
    lvis_files = {
        split: osp.join(out_dir, 'annotations', f'lvis_v1_{split}.json')
        for split in coco_files
    }
    # generate_demo_shapes removes the annotations folder whenever it
    # redraws, so existing LVIS files always belong to the current set.
    if all(osp.isfile(path) for path in lvis_files.values()):
        return lvis_files
    splits = {}
    for split, path in coco_files.items():
        with open(path) as f:
            splits[split] = json.load(f)
    # LVIS v1 val files carry the training counts too.
    train_anns = splits['train']['annotations']
    for category in splits['train']['categories']:
        cat_id = category['id']
        image_count = len({
            ann['image_id']
            for ann in train_anns if ann['category_id'] == cat_id
        })
        category.update(
            image_count=image_count,
            instance_count=sum(ann['category_id'] == cat_id
                               for ann in train_anns),
            frequency=_lvis_frequency(image_count),
            synonyms=[category['name']])
        category['def'] = category['name']
    categories = splits['train']['categories']
    all_cat_ids = [category['id'] for category in categories]
    for split, lvis in splits.items():
        lvis['categories'] = categories
        present: Dict[int, set] = {
            image['id']: set()
            for image in lvis['images']
        }
        for ann in lvis['annotations']:
            present[ann['image_id']].add(ann['category_id'])
        for image in lvis['images']:
            image['neg_category_ids'] = [
                cat_id for cat_id in all_cat_ids
                if cat_id not in present[image['id']]
            ]
            image['not_exhaustive_category_ids'] = []
        with open(lvis_files[split], 'w') as f:
            json.dump(lvis, f)
    return lvis_files
