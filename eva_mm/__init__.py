"""eva_mm: EVA (arXiv:2211.07636) on OpenMMLab 2.x.

Importing the package registers every component under the ``eva_mm`` scope,
so ``custom_imports=dict(imports=['eva_mm'])`` in any OpenMMLab config makes
``type='eva_mm.EVAViT'`` (and the other components) available.
"""
from . import datasets, engine, evaluation, models  # noqa: F401  (registration side effects)

__version__ = '0.1.0'
