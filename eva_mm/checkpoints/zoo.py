"""The model zoo: every released EVA file, the config it runs in, its format.

The metafiles follow OpenMMLab's model-index format: ``model-index.yml`` at
the repository root imports one ``configs/<task>/metafile.yml`` per task
folder, each with ``Collections`` and ``Models`` (``Name``, ``In
Collection``, ``Config``, ``Metadata``, ``Results``, ``Weights``). eva_mm
adds:

- ``Metadata.Official Name`` / ``File``: the official README's model name
  and file name; ``Size`` and ``SHA256`` only where the README gives them.
- ``Converter``: ``Src Format`` (the ``--src-format`` of
  ``tools/model_converters/convert_eva.py`` that reads the file), ``Args``
  (further converter options, e.g. ``--classifier``) and ``Load``:
  ``model`` when the file holds the config's whole model, ``backbone`` when
  it initialises ``model.backbone``.
- ``Source`` in each result: the README table (or paper table) the number
  is from.

``Weights`` is the official file's direct-download URL; the file is read in
its official layout and converted (:mod:`eva_mm.checkpoints.download`
fetches it). A name is looked up with :func:`get_model_info`.

The index read is the checkout's ``model-index.yml``, or the file that the
environment variable ``EVA_MM_MODEL_INDEX`` names (a zoo of one's own, or a
test index whose ``Weights`` point at a local server), or the one passed as
``index_file``.
"""
import difflib
import fnmatch
import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from .download import download_checkpoint, url_file_name

PathLike = Union[str, Path]

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_INDEX = REPO_ROOT / 'model-index.yml'
# Names another model index for every entry point (tools and Python).
MODEL_INDEX_ENV = 'EVA_MM_MODEL_INDEX'
# Converter.Load: the whole model of the config, or its model.backbone.
LOAD_KINDS = ('model', 'backbone')


class ModelZooError(ValueError):
    """An unknown model name, or a metafile that breaks the format."""


@dataclass(frozen=True)
class ModelInfo:
    """One released checkpoint of the model zoo.

    Attributes:
        name: The zoo name (``Name``).
        collection: ``In Collection``.
        config: The config file, relative to the repository root.
        weights: The official download URL.
        src_format: The ``--src-format`` that converts the file.
        load: ``'model'`` or ``'backbone'`` (see :data:`LOAD_KINDS`).
        converter_args: Further ``convert_eva.py`` options.
        file_name: The file's name, as cached (the URL's last part).
        official_name: The official README's model name, if it gives one.
        size: The size the official README states (text, e.g. ``'4GB'``).
        sha256: The expected SHA-256, where published.
        results: ``Results`` as written (Task, Dataset, Metrics, Source).
        metadata: ``Metadata`` as written.
        metafile: The metafile that lists it.
    """
    name: str
    collection: str
    config: str
    weights: str
    src_format: str
    load: str
    converter_args: Tuple[str, ...]
    file_name: str
    official_name: Optional[str]
    size: Optional[str]
    sha256: Optional[str]
    results: Tuple[Mapping[str, Any], ...]
    metadata: Mapping[str, Any]
    metafile: Path

    @property
    def config_path(self) -> Path:
        """The config file as an absolute path."""
        return REPO_ROOT / self.config

    @property
    def task(self) -> str:
        """The task of the first result (every entry has one)."""
        return self.results[0]['Task']

    @property
    def metrics(self) -> Dict[str, float]:
        """Every published number as ``{'<Dataset> <metric>': value}``."""
        return {
            f'{result["Dataset"]} {metric}': value
            for result in self.results
            for metric, value in (result.get('Metrics') or {}).items()
        }


def _model_info(entry: Mapping[str, Any], collections: Mapping[str, Any],
                metafile: Path) -> ModelInfo:
    name = entry.get('Name')
    where = f'{metafile}, model {name!r}'
    missing = [
        key for key in ('Name', 'In Collection', 'Config', 'Weights',
                        'Converter', 'Results') if not entry.get(key)
    ]
    if missing:
        raise ModelZooError(f'{where} lacks {", ".join(missing)}.')
    if entry['In Collection'] not in collections:
        raise ModelZooError(
            f'{where}: no collection {entry["In Collection"]!r} (known: '
            f'{sorted(collections)}).')
    converter = entry['Converter']
    if not converter.get('Src Format'):
        raise ModelZooError(f'{where}: Converter lacks Src Format.')
    if converter.get('Load') not in LOAD_KINDS:
        raise ModelZooError(
            f'{where}: Converter.Load is {converter.get("Load")!r}, not one '
            f'of {LOAD_KINDS}.')
    weights = entry['Weights']
    if not weights.startswith(('https://', 'http://')):
        raise ModelZooError(f'{where}: Weights {weights!r} is no URL.')
    metadata = entry.get('Metadata') or {}
    file_name = url_file_name(weights)
    if metadata.get('File', file_name) != file_name:
        # The cache names a file by its URL, as mmengine's load_url does.
        raise ModelZooError(
            f'{where}: Metadata.File {metadata["File"]!r} is not the file '
            f'of its URL, {file_name!r}.')
    results = tuple(entry['Results'])
    if any('Task' not in result or 'Dataset' not in result
           for result in results):
        raise ModelZooError(f'{where}: every result needs Task and Dataset.')
    return ModelInfo(
        name=name,
        collection=entry['In Collection'],
        config=entry['Config'],
        weights=weights,
        src_format=converter['Src Format'],
        load=converter['Load'],
        converter_args=tuple(converter.get('Args') or ()),
        file_name=file_name,
        official_name=metadata.get('Official Name'),
        size=metadata.get('Size'),
        sha256=metadata.get('SHA256'),
        results=results,
        metadata=metadata,
        metafile=metafile)


@functools.lru_cache(maxsize=None)
def _load_index(index_file: Path) -> Dict[str, ModelInfo]:
    import yaml  # here: importing eva_mm.checkpoints stays light

    if not index_file.is_file():
        raise ModelZooError(
            f'No model index at {index_file}: the model zoo reads the '
            "checkout's model-index.yml (and the metafiles it imports); run "
            'from a checkout or pass the file (index_file, --index).')
    with open(index_file, encoding='utf-8') as file:
        index = yaml.safe_load(file) or {}
    models: Dict[str, ModelInfo] = {}
    for relative in index.get('Import', []):
        metafile = index_file.parent / relative
        with open(metafile, encoding='utf-8') as file:
            content = yaml.safe_load(file) or {}
        collections = {
            collection['Name']: collection
            for collection in content.get('Collections') or []
        }
        for entry in content.get('Models') or []:
            info = _model_info(entry, collections, metafile)
            if info.name in models:
                raise ModelZooError(
                    f'{metafile}: model {info.name!r} is also listed in '
                    f'{models[info.name].metafile}.')
            models[info.name] = info
    return models


def load_model_index(
        index_file: Optional[PathLike] = None) -> Dict[str, ModelInfo]:
    """Every model of the model index, read once and cached.

    Args:
        index_file: A ``model-index.yml``; ``None`` is the one named by
            ``$EVA_MM_MODEL_INDEX``, else the repository's.

    Returns:
        ``{name: ModelInfo}`` in metafile order.

    Raises:
        ModelZooError: For an entry that breaks the format (naming the
            metafile, the model and the problem) or a name listed twice.
    """
    return _load_index(index_path(index_file))


def index_path(index_file: Optional[PathLike] = None) -> Path:
    """The model index read for ``index_file`` (see
    :func:`load_model_index`), as an absolute path."""
    return Path(index_file or os.environ.get(MODEL_INDEX_ENV)
                or MODEL_INDEX).resolve()


def models_for_url(url: str,
                   index_file: Optional[PathLike] = None) -> List[ModelInfo]:
    """The models whose official file is at ``url``.

    A URL given without its zoo name (``load_from=URL``) still gets the
    entry's format and expected hash this way.

    Args:
        url: An ``http(s)://`` URL.
        index_file: See :func:`load_model_index`.

    Returns:
        The models in metafile order (one file can run in several configs);
        empty when none, or when there is no model index (an installed
        eva_mm without its checkout).
    """
    if not index_path(index_file).is_file():
        return []
    return [
        info for info in load_model_index(index_file).values()
        if info.weights == url
    ]


def list_models(pattern: Optional[str] = None,
                task: Optional[str] = None,
                index_file: Optional[PathLike] = None) -> List[ModelInfo]:
    """The models whose name matches ``pattern`` and whose task is ``task``.

    Args:
        pattern: A shell wildcard (``'eva02-l*lvis*'``) or, without
            wildcard characters, a part of the name; ``None`` matches all.
        task: A task of the results, e.g. ``'Object Detection'``
            (case-insensitive); ``None`` matches all.
        index_file: See :func:`load_model_index`.

    Returns:
        The matching models in metafile order.
    """
    if pattern is not None and not any(c in pattern for c in '*?['):
        pattern = f'*{pattern}*'
    return [
        info for info in load_model_index(index_file).values()
        if (pattern is None or fnmatch.fnmatchcase(info.name, pattern)) and (
            task is None or task.lower() in
            {result['Task'].lower() for result in info.results})
    ]


def get_model_info(name: str,
                   index_file: Optional[PathLike] = None) -> ModelInfo:
    """The model of a zoo name, or of an official model name if only one
    model has it (``'eva_lvis'``).

    Args:
        name: A ``Name`` or ``Metadata.Official Name`` of a metafile.
        index_file: See :func:`load_model_index`.

    Returns:
        Its :class:`ModelInfo`.

    Raises:
        ModelZooError: For an unknown name, listing the closest names, or an
            official name that several models share, listing them.
    """
    models = load_model_index(index_file)
    if name in models:
        return models[name]
    same_file = [
        info for info in models.values() if info.official_name == name
    ]
    if len(same_file) == 1:
        return same_file[0]
    if same_file:
        raise ModelZooError(
            f'{name!r} is the official file of several zoo models (one per '
            'config it runs in); name one: ' +
            ', '.join(info.name for info in same_file))
    known = list(models) + sorted({
        info.official_name
        for info in models.values() if info.official_name
    })
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
    hint = (f' Did you mean: {", ".join(close)}?' if close else '')
    raise ModelZooError(
        f'No model {name!r} in the model zoo.{hint} '
        '`python tools/model_zoo.py list` lists all.')


def config_entry(config: str) -> ModelInfo:
    """The model-zoo entry of a name given where a config file is expected
    (``tools/test.py NAME``, ``init_model(NAME)``).

    Args:
        config: What was given in place of the config file.

    Returns:
        The entry (its ``config_path`` and ``weights``).

    Raises:
        FileNotFoundError: ``config`` is no zoo name (nor, as the caller
            checked, a file); the closest names are listed.
    """
    try:
        return get_model_info(config)
    except ModelZooError as err:
        raise FileNotFoundError(
            f'{config} is no config file and no model-zoo name: {err}'
        ) from None


def download_model(name: Union[str, ModelInfo],
                   out_dir: Optional[PathLike] = None,
                   progress: bool = True,
                   index_file: Optional[PathLike] = None) -> Path:
    """The official file of a zoo model, downloaded unless already there.

    Args:
        name: A zoo name (see :func:`get_model_info`) or its info.
        out_dir: The folder; ``None`` is the checkpoint cache (torch hub's,
            :func:`~eva_mm.checkpoints.download.checkpoint_cache_dir`).
        progress: Show a progress bar while downloading.
        index_file: See :func:`load_model_index`.

    Returns:
        The path of the complete file, named as the URL names it.
    """
    info = name if isinstance(name, ModelInfo) else get_model_info(
        name, index_file)
    return download_checkpoint(
        info.weights, cache_dir=out_dir, sha256=info.sha256,
        progress=progress)


def _results_text(info: ModelInfo) -> List[str]:
    # 'COCO box AP 64.2, COCO mask AP 53.9 (source)': one source once.
    by_source: Dict[str, List[str]] = {}
    for result in info.results:
        for metric, value in (result.get('Metrics') or {}).items():
            by_source.setdefault(result.get('Source', ''), []).append(
                f'{result["Dataset"]} {metric} {value}')
    return [
        ', '.join(numbers) + (f' ({source})' if source else '')
        for source, numbers in by_source.items()
    ]


def markdown_table(models: List[ModelInfo]) -> str:
    """The model-zoo table of ``docs/model_zoo.md``.

    Args:
        models: The models, in the table's order.

    Returns:
        A Markdown table, one row per model, ending with a newline.
    """
    rows = [
        '| name | task | config | official file | `--src-format` | load | '
        'official results |',
        '| --- | --- | --- | --- | --- | --- | --- |',
    ]
    for info in models:
        metrics = '; '.join(_results_text(info)) or '-'
        config = Path(info.config)
        rows.append(
            f'| `{info.name}` | {info.task} | [{config.stem}](../{config}) '
            f'| [{info.file_name}]({info.weights}) | {info.src_format} | '
            f'{info.load} | {metrics} |')
    return '\n'.join(rows) + '\n'
