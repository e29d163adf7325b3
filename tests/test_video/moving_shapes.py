"""Generate short videos of moving shapes with a Kinetics-style list file.

Each class is a shape and a direction of motion. The layout is Kinetics':
``videos/<name>.mp4`` and list files of ``<name>.mp4 <label>`` lines. The
training list also holds a corrupt file (random bytes), which training skips
(eva_mm.UnreadableDataHook); the validation list one clip whose width (48)
decord 0.6 cannot decode, so that the OpenCV fallback is used.

Run as a script to write a set for the demo config:
``python tests/test_video/moving_shapes.py data/moving_shapes``.
"""
import argparse
from pathlib import Path
from typing import List, Tuple

import cv2
import numpy as np

CLASSES = ('circle_right', 'circle_left', 'circle_down', 'square_right',
           'square_left', 'square_down')
VELOCITY = {'right': (1, 0), 'left': (-1, 0), 'down': (0, 1)}
CORRUPT = 'corrupt.mp4'
NARROW = 'narrow.mp4'


def draw_clip(label: int,
              rng: np.random.Generator,
              num_frames: int = 16,
              size: Tuple[int, int] = (64, 64)) -> List[np.ndarray]:
    """BGR frames of one shape moving 2 px per frame in its class direction.

    Args:
        label: Index into :data:`CLASSES`.
        rng: Source of the start position and colour.
        num_frames: Frames in the clip.
        size: Frame (width, height).

    Returns:
        ``num_frames`` uint8 arrays of shape (height, width, 3).
    """
    shape, direction = CLASSES[label].split('_')
    dx, dy = VELOCITY[direction]
    width, height = size
    radius, step = 7, 2
    travel = step * (num_frames - 1)
    # Start where the whole path stays inside the frame.
    x0 = int(rng.integers(radius + max(-dx, 0) * travel,
                          width - radius - max(dx, 0) * travel))
    y0 = int(rng.integers(radius, height - radius - max(dy, 0) * travel))
    colour = tuple(int(c) for c in rng.integers(96, 256, size=3))
    frames = []
    for t in range(num_frames):
        frame = np.zeros((height, width, 3), np.uint8)
        x, y = x0 + dx * step * t, y0 + dy * step * t
        if shape == 'circle':
            cv2.circle(frame, (x, y), radius, colour, -1)
        else:
            cv2.rectangle(frame, (x - radius, y - radius),
                          (x + radius, y + radius), colour, -1)
        frames.append(frame)
    return frames


def write_video(path: Path, frames: List[np.ndarray], fps: int = 8) -> None:
    """Write BGR frames as an MPEG-4 Part 2 ``.mp4`` with OpenCV."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(
        str(path), cv2.VideoWriter_fourcc(*'mp4v'), fps, (width, height))
    for frame in frames:
        writer.write(frame)
    writer.release()


def generate(root: Path,
             train_per_class: int = 4,
             val_per_class: int = 2,
             seed: int = 0) -> None:
    """Write ``videos/``, ``train_list.txt`` and ``val_list.txt`` to root."""
    rng = np.random.default_rng(seed)
    videos = root / 'videos'
    videos.mkdir(parents=True, exist_ok=True)
    for split, per_class in (('train', train_per_class),
                             ('val', val_per_class)):
        lines = []
        for label in range(len(CLASSES)):
            for i in range(per_class):
                name = f'{split}_{CLASSES[label]}_{i}.mp4'
                write_video(videos / name, draw_clip(label, rng))
                lines.append(f'{name} {label}')
        if split == 'train':
            (videos / CORRUPT).write_bytes(rng.bytes(2048))
            lines.append(f'{CORRUPT} 0')
        else:
            write_video(videos / NARROW, draw_clip(0, rng, size=(48, 48)))
            lines.append(f'{NARROW} 0')
        (root / f'{split}_list.txt').write_text('\n'.join(lines) + '\n')


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('root', type=Path, help='output folder')
    generate(parser.parse_args().root)
