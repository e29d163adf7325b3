"""Checkpoints: reading, converting and loading EVA weights.

One room for everything that touches a weights file, one module per job:

- ``errors.py``: :class:`CheckpointError` and
  :class:`CheckpointMismatchError`;
- ``reading.py``: files to flat state dicts, ``weights_only`` or
  safetensors;
- ``state_dict.py``: what every loader and converter shares (prefixes, the
  fp32 cast, required keys, the key/shape comparison);
- ``eva01.py``: EVA-01 ViT files as :class:`~eva_mm.models.EVAViT`
  weights;
- ``resizing.py``: converted weights resized for another patch or image
  size;
- ``loading.py``: strict loading into an EVAViT (``init_cfg=Pretrained``);
- ``model_check.py``: refusing a file that would leave weights of a whole
  model unloaded;
- ``registry.py`` and ``converters/``: the ``--src-format`` registry of
  ``tools/model_converters/convert_eva.py`` and one module per released
  checkpoint family;
- ``open_clip_convert.py``: EVAViT weights to and from open_clip's EVA
  CLIP models;
- ``recognition.py``: which format a file is in (named, its zoo entry's,
  or recognised from its keys) and its conversion in memory, so that the
  loaders take released files as they are;
- ``zoo.py``: the model zoo of released EVA files, read from the metafiles
  (``model-index.yml``);
- ``download.py``: fetching a file into torch hub's checkpoint cache so that
  no incomplete file is ever left under its final name;
- ``sources.py``: a path, ``http(s)://`` URL or zoo name to a local file,
  and mmengine's loader of URLs.

Import direction: this package imports :mod:`eva_mm.models` (the resizing
functions of ``models/layers/pos_embed.py``, and :class:`EVAViT` for what
it declares about its parameters: ``target_sizes``, ``fresh_keys()``, the
names of its relative position tables), and nothing under
``eva_mm/models`` imports this package, not even inside a function. This
way round because conversion is about models (it names their parameters
and builds them to check a result) while a model needs no file format to
compute; the one thing a model asks of this package, loading
``init_cfg=dict(type='Pretrained')`` strictly, it finds by name through
eva_mm's ``WEIGHT_INITIALIZERS`` registry, as mmengine's own modules find
``Pretrained``. ``tests/test_package/test_import_graph.py`` keeps the
import graph free of cycles.

Importing this package imports nothing; ``converters`` registers the
formats when it is imported.
"""
