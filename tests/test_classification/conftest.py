"""Shared fixtures of the classification tests."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

NUM_CLASSES, PER_CLASS, SIZE = 5, 4, 32


@pytest.fixture(scope='session')
def image_folder(tmp_path_factory) -> Path:
    """Five colour classes of 32 px images, one folder each (ImageNet's
    layout, WordNet-id-like names)."""
    root = tmp_path_factory.mktemp('cls') / 'data'
    rng = np.random.default_rng(0)
    for label in range(NUM_CLASSES):
        folder = root / f'n{label:08d}'
        folder.mkdir(parents=True)
        colour = rng.integers(0, 256, 3)
        for i in range(PER_CLASS):
            pixels = np.clip(colour + rng.normal(0, 25, (SIZE, SIZE, 3)), 0,
                             255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f'{i}.png')
    return root
