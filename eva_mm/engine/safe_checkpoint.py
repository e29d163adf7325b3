"""Let ``torch.load(weights_only=True)`` read the checkpoints mmengine writes.

Since torch 2.6, ``torch.load`` defaults to ``weights_only=True``. mmengine
0.10.7 does not pass ``weights_only``, and its checkpoints hold more than
tensors: the message hub pickles :class:`HistoryBuffer` objects (whose
statistics table stores its methods, pickled as ``getattr(HistoryBuffer,
'mean')``)
and numpy arrays and scalars. So ``--resume``, ``load_from`` and
``tools/test.py CONFIG CHECKPOINT`` all fail.

Rather than turning ``weights_only`` off, this module allow-lists exactly what
mmengine writes. ``getattr`` and ``codecs.encode`` are not allow-listed as
such: their pickle names are mapped to narrow stand-ins that accept only the
calls mmengine's pickles make, so an untrusted file still cannot reach
arbitrary attributes.
"""
import codecs

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

from eva_mm.checkpoints.reading import register_training_script_globals
from eva_mm.checkpoints.sources import register_url_loader

# numpy 2 pickles under numpy._core, numpy 1 under numpy.core.
_NUMPY_CORE = 'numpy._core.multiarray' if hasattr(
    np, '_core') else 'numpy.core.multiarray'


def _history_buffer_getattr(obj: object, name: str) -> object:
    """``getattr`` limited to HistoryBuffer's own public methods."""
    if obj is not HistoryBuffer or name.startswith('_') or \
            not callable(getattr(HistoryBuffer, name, None)):
        raise ValueError(
            f'Refusing getattr({obj!r}, {name!r}) while loading a checkpoint '
            'with weights_only=True: only HistoryBuffer methods are '
            'allowed.')
    return getattr(HistoryBuffer, name)


def _latin1_encode(text: str, encoding: str = 'utf-8') -> bytes:
    """``codecs.encode`` limited to the latin1 round trip numpy uses."""
    if encoding != 'latin1' or not isinstance(text, str):
        raise ValueError('Refusing codecs.encode with encoding '
                         f'{encoding!r} while loading a checkpoint.')
    return codecs.encode(text, encoding)


def register_mmengine_safe_globals() -> None:
    """Allow-list what mmengine checkpoints contain, for weights_only loads.

    Safe to call more than once.
    """
    import numpy._core.multiarray as multiarray  # noqa: PLC0415
    torch.serialization.add_safe_globals([
        HistoryBuffer,
        np.ndarray,
        np.dtype,
        (multiarray._reconstruct, f'{_NUMPY_CORE}._reconstruct'),
        (multiarray.scalar, f'{_NUMPY_CORE}.scalar'),
        (_history_buffer_getattr, 'builtins.getattr'),
        (_latin1_encode, '_codecs.encode'),
    ] + [type(np.dtype(code)) for code in '?bBhHiIlLqQefdgFDG'])


def setup_checkpoint_loading() -> None:
    """What a run needs before any checkpoint is loaded: mmengine's own
    checkpoints (above) and the official training scripts' extras readable
    with ``weights_only``, and mmengine's ``http(s)://`` loads going through
    eva_mm's safe download
    (:func:`eva_mm.checkpoints.sources.register_url_loader`).

    Called by the tools' runner set-up (:mod:`eva_mm.engine.cli`) and by
    :func:`eva_mm.apis.init_model`, not on ``import eva_mm``. Safe to call
    more than once.
    """
    register_mmengine_safe_globals()
    register_training_script_globals()
    register_url_loader()
