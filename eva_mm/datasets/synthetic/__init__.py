"""Generated data sets for the demo, the tests and quick config trials.

Kept apart from the real data sets in :mod:`eva_mm.datasets`: these are
functions that draw files (no download), not registered datasets.
"""
from .ade_shapes import generate_demo_ade
from .shapes import CLASSES as DEMO_SHAPES_CLASSES
from .shapes import PALETTE as DEMO_SHAPES_PALETTE
from .shapes import generate_demo_lvis, generate_demo_shapes

__all__ = [
    'DEMO_SHAPES_CLASSES', 'DEMO_SHAPES_PALETTE', 'generate_demo_ade',
    'generate_demo_lvis', 'generate_demo_shapes'
]
