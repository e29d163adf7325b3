"""Checkpoints: the model zoo of released EVA files and their download.

:mod:`eva_mm.checkpoints.zoo` reads the metafiles (``model-index.yml``);
:mod:`eva_mm.checkpoints.download` fetches a file into torch hub's
checkpoint cache so that no incomplete file is ever left under its final
name.
"""
