"""eva_mm: EVA (arXiv:2211.07636) on OpenMMLab 2.x.

``import eva_mm`` imports no toolbox: each registry in
:mod:`eva_mm.registry` names the subpackage that holds its components
(``locations``), and mmengine imports that subpackage on the first look-up
of a scoped name. So ``custom_imports=dict(imports=['eva_mm'])`` in any
OpenMMLab config makes ``type='eva_mm.EVAViT'`` (and the other components)
available, and only the toolboxes a config uses get imported.
"""
__version__ = '0.1.0'
