"""Where a checkpoint comes from: a file, an ``http(s)://`` URL or a zoo name.

Every entry point that loads weights takes any of the three
(:func:`resolve_checkpoint`). A URL is fetched into the checkpoint cache by
:func:`~eva_mm.checkpoints.download.download_checkpoint` (complete or not
at all, with the SHA-256 of its model-zoo entry where the metafile gives
one), and a zoo name is its entry's URL; the entry also names the file's
format and converter options for the loaders. :func:`load_from_url`
does the same for mmengine's own URL loads (``load_from``, ``init_cfg`` of
any module) once :func:`register_url_loader` has put it in mmengine's
``CheckpointLoader``, in place of mmengine's loader, which goes through
``torch.hub.download_url_to_file`` and keeps a file cut short by a dropped
connection.
"""
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

from .download import download_checkpoint
from .errors import CheckpointError
from .reading import read_checkpoint
from .zoo import ModelInfo, ModelZooError, get_model_info, models_for_url

URL_SCHEMES = ('http://', 'https://')


@dataclass(frozen=True)
class CheckpointSource:
    """A checkpoint as the user named it, and the file that holds it.

    Attributes:
        spec: What was given: a path, a URL or a zoo name.
        path: The local file (the cached download of a URL or name).
        model: The model-zoo entry of the file, when the name or the URL is
            one; it names the file's format (``Src Format``), converter
            options and whether it holds a whole model or a backbone.
    """
    spec: str
    path: Path
    model: Optional[ModelInfo] = None


def is_url(spec: str) -> bool:
    """Whether ``spec`` is an ``http(s)://`` URL."""
    return spec.startswith(URL_SCHEMES)


def zoo_model_of_url(url: str) -> Optional[ModelInfo]:
    """The model-zoo entry of the file at ``url``, if the zoo lists it.

    One file can run in several configs; their entries agree on what the
    file is, and the first is returned.

    Args:
        url: An ``http(s)://`` URL.

    Returns:
        The entry, or ``None`` for a URL the zoo does not list.
    """
    models = models_for_url(url)
    return models[0] if models else None


def checkpoint_location(
        spec: str,
        model: Optional[ModelInfo] = None) -> Tuple[str, Optional[ModelInfo]]:
    """Where to load ``spec`` from, without downloading anything.

    Args:
        spec: A checkpoint file, an ``http(s)://`` URL or a model-zoo name
            (``python tools/model_zoo.py list``).
        model: The zoo entry ``spec`` is known to belong to (a name's
            entry, whose URL is ``spec``); looked up when ``None``.

    Returns:
        The path or URL, and the zoo entry of the file (``None`` for a
        local file or a URL the zoo does not list).

    Raises:
        FileNotFoundError: ``spec`` is neither an existing path, a URL nor
            a zoo name; the message names the closest zoo names.
    """
    if is_url(spec):
        return spec, model or zoo_model_of_url(spec)
    if os.path.exists(spec):
        return spec, model
    try:
        model = get_model_info(spec)
    except ModelZooError as err:
        raise FileNotFoundError(
            f'Checkpoint {spec} does not exist: it is no file, no http(s):// '
            f'URL and no model-zoo name ({err})') from None
    return model.weights, model


def require_whole_model(model: Optional[ModelInfo], spec: str) -> None:
    """Refuse a zoo entry that holds a backbone where a whole model loads.

    Args:
        model: The zoo entry of the checkpoint, if any.
        spec: The checkpoint as given, for the message.

    Raises:
        CheckpointError: For a ``Load: backbone`` entry.
    """
    if model is not None and model.load == 'backbone':
        raise CheckpointError(
            f'{spec} ({model.name}) holds backbone weights, not a whole '
            'model: give it to the backbone, model.backbone.init_cfg='
            f"dict(type='Pretrained', checkpoint='{model.name}') (of "
            f'{model.config} or another config with this backbone), or use '
            f"eva_mm.apis.init_model('{model.name}'), which does so.")


def fetch_url(url: str,
              model: Optional[ModelInfo] = None,
              progress: bool = True) -> Path:
    """The cached file of ``url``, downloaded first if absent.

    In a distributed run, rank 0 downloads while the others wait, then find
    the file in the cache (as mmengine's URL loading does).

    Args:
        url: An ``http(s)://`` URL.
        model: Its zoo entry, whose ``SHA256`` the download must match.
        progress: Show a progress bar while downloading.

    Returns:
        The path of the complete file.

    Raises:
        DownloadError: See :func:`~eva_mm.checkpoints.download.download_file`.
        IncompleteCheckpointError: The cached file is truncated or no
            checkpoint.
    """
    from mmengine.dist import barrier, get_dist_info

    sha256 = model.sha256 if model is not None else None
    rank, world_size = get_dist_info()
    if rank == 0:
        path = download_checkpoint(url, sha256=sha256, progress=progress)
    if world_size > 1:
        barrier()
        if rank > 0:
            path = download_checkpoint(url, sha256=sha256, progress=progress)
    return path


def resolve_checkpoint(spec: str,
                       model: Optional[ModelInfo] = None,
                       progress: bool = True) -> CheckpointSource:
    """The local file of a checkpoint path, URL or zoo name.

    Args:
        spec: See :func:`checkpoint_location`.
        model: See :func:`checkpoint_location`.
        progress: Show a progress bar while downloading.

    Returns:
        The file and, for a zoo name or a URL the zoo lists, its entry.

    Raises:
        FileNotFoundError: See :func:`checkpoint_location`.
        DownloadError, IncompleteCheckpointError: See :func:`fetch_url`.
    """
    location, model = checkpoint_location(spec, model)
    if is_url(location):
        return CheckpointSource(spec, fetch_url(location, model, progress),
                                model)
    return CheckpointSource(spec, Path(location), model)


def load_from_url(filename: str, map_location: object = None) -> object:
    """mmengine's ``CheckpointLoader`` for ``http(s)://`` paths.

    Args:
        filename: The URL.
        map_location: As for ``torch.load``.

    Returns:
        The checkpoint as saved (read with ``weights_only=True``).
    """
    path = fetch_url(filename, zoo_model_of_url(filename))
    return read_checkpoint(path, map_location=map_location or 'cpu')


def register_url_loader() -> None:
    """Make :func:`load_from_url` mmengine's loader of ``http://`` and
    ``https://`` paths, for every checkpoint mmengine loads in this process.

    Called where eva_mm sets up checkpoint loading
    (:func:`eva_mm.engine.safe_checkpoint.setup_checkpoint_loading`), not on
    ``import eva_mm``. Safe to call more than once.
    """
    from mmengine.runner import CheckpointLoader

    CheckpointLoader.register_scheme(
        prefixes=URL_SCHEMES, loader=load_from_url, force=True)
