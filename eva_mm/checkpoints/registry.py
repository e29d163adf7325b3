"""The registry of checkpoint source formats, and checking and writing results.

Every ``--src-format`` of ``tools/model_converters/convert_eva.py`` is a
:class:`SourceFormat` registered here by the module of its source family
(``eva01_backbone``: official EVA-01 and timm ViT weights, and so on). A
format reads nothing and writes nothing itself: the tool reads the file with
:func:`~eva_mm.checkpoints.reading.load_state_dict_file`, hands the flat
state dict to ``convert``, optionally checks the result against a model
config (:func:`check_fits_config`), and only then writes it with
:func:`save_converted`, so a file of the wrong kind never leaves a
half-written output behind. Each format also says whether a state dict is
in its layout (``recognise``), so that the loaders take official files as
they are (:mod:`eva_mm.checkpoints.recognition`).
"""
import argparse
import os
from dataclasses import dataclass, field
from importlib import import_module
from typing import (TYPE_CHECKING, Callable, Dict, List, Mapping, Optional,
                    Sequence, Union)

import torch

from .errors import CONVERTER, CheckpointError, CheckpointMismatchError
from .state_dict import StateDict, compare_state_dicts

if TYPE_CHECKING:
    from mmengine.config import Config, ConfigDict


@dataclass
class Conversion:
    """What a source format made of a checkpoint.

    Attributes:
        state_dict: The converted weights, named as the eva_mm model names
            them.
        meta: Facts about the result for the output's ``meta`` (sizes, class
            counts, ...).
        dropped: Source keys that have no counterpart in the target and were
            left out on purpose; the tool lists them.
        report: Further lines for the user (what was resized, remapped).
    """
    state_dict: StateDict
    meta: Dict[str, object] = field(default_factory=dict)
    dropped: List[str] = field(default_factory=list)
    report: List[str] = field(default_factory=list)


ConvertFn = Callable[[StateDict, argparse.Namespace], Conversion]
AddArgumentsFn = Callable[[argparse.ArgumentParser], None]
RecogniseFn = Callable[[Mapping[str, torch.Tensor]], bool]


@dataclass(frozen=True)
class SourceFormat:
    """One ``--src-format`` of the converter tool.

    Attributes:
        name: The ``--src-format`` value.
        help: One sentence on which files it reads and what it writes.
        convert: ``convert(state_dict, args) -> Conversion``; ``args`` is the
            tool's parsed command line. Raises
            :class:`~eva_mm.checkpoints.errors.CheckpointError` with the
            problem and the fix for a file of another kind.
        recognise: ``recognise(state_dict) -> bool``: whether a flat state
            dict (its names and shapes; values may be on the meta device) is
            in this format's layout. Written from the names only the
            official layout has, so that it never claims eva_mm's own
            layout of a whole model; two formats whose layouts cannot be
            told apart both claim such a file.
        add_arguments: Adds the format's own command-line options to the
            tool's parser (called once per format; options shared by several
            formats are added by the first and skipped by the others through
            :func:`add_argument_once`).
    """
    name: str
    help: str
    convert: ConvertFn
    recognise: RecogniseFn
    add_arguments: Optional[AddArgumentsFn] = None


SRC_FORMATS: Dict[str, SourceFormat] = {}
# The package whose modules register the formats. The hints below import it
# on first use, as an mmengine registry imports its ``locations``: its
# modules import this one, so this one cannot import them at the top.
_LOCATION = 'eva_mm.checkpoints.converters'


def register_src_format(
        name: str,
        help: str,
        add_arguments: Optional[AddArgumentsFn] = None,
        *,
        recognise: RecogniseFn) -> Callable[[ConvertFn], ConvertFn]:
    """Register the decorated function as the converter of ``name``.

    Args:
        name: The ``--src-format`` value.
        help: One sentence for ``--help``.
        add_arguments: See :class:`SourceFormat`.
        recognise: See :class:`SourceFormat`; every format has one.

    Returns:
        A decorator that registers and returns the function unchanged.
    """

    def register(convert: ConvertFn) -> ConvertFn:
        if name in SRC_FORMATS:
            raise KeyError(f'Source format {name!r} is registered twice.')
        SRC_FORMATS[name] = SourceFormat(name, help, convert, recognise,
                                         add_arguments)
        return convert

    return register


def registered_formats() -> Dict[str, SourceFormat]:
    """Every registered format, its modules imported first.

    Returns:
        :data:`SRC_FORMATS`, by name.
    """
    import_module(_LOCATION)
    return SRC_FORMATS


def recognised_formats(state_dict: Mapping[str, torch.Tensor]) -> List[str]:
    """The formats whose layout ``state_dict`` is in.

    Args:
        state_dict: A flat state dict (values may be meta tensors).

    Returns:
        The names of the formats that recognise it, sorted; empty for a
        file of no registered format (eva_mm's own layout, say).
    """
    return sorted(name for name, fmt in registered_formats().items()
                  if fmt.recognise(state_dict))


def add_format_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every format's own options (``--img-size``, ``--classifier``,
    ...) to ``parser``.

    Args:
        parser: A parser, e.g. the converter tool's.
    """
    for fmt in registered_formats().values():
        if fmt.add_arguments is not None:
            fmt.add_arguments(parser)


def format_arguments(options: Sequence[str] = (),
                     **values: object) -> argparse.Namespace:
    """The options a format's ``convert`` reads, as the tool would parse
    them, for converting without the tool.

    Args:
        options: Command-line options, e.g. a metafile entry's converter
            ``Args`` (``['--classifier']``).
        **values: Further values set after parsing (``config``,
            ``img_size``, ...).

    Returns:
        The namespace, every format option at its default unless given.

    Raises:
        CheckpointError: For an option no format has.
    """
    parser = argparse.ArgumentParser(prog='format options', add_help=False)
    add_format_arguments(parser)
    args, unknown = parser.parse_known_args(list(options))
    if unknown:
        raise CheckpointError(
            f'Converter options {unknown} are no option of any format; '
            f'the formats take: {sorted(parser._option_string_actions)}.')
    vars(args).update(values)
    return args


def model_config(config: Union[str, 'Config']) -> 'ConfigDict':
    """The model settings of a config, for the formats that read sizes and
    class counts from it.

    Args:
        config: A config file or a loaded config.

    Returns:
        Its ``model``; the model inside a test-time augmentation wrapper
        (``tools/test.py --tta``) for a wrapped one.
    """
    from mmengine.config import Config

    cfg = Config.fromfile(config) if isinstance(config, str) else config
    model = cfg.model
    # TTA wrappers (mmengine's BaseTTAModel) hold the model as 'module'.
    while 'module' in model and 'backbone' not in model:
        model = model.module
    return model


def src_format_hint(*names: str) -> str:
    """The ``--src-format`` option naming registered formats, for errors.

    Errors about a file of another kind say which format fits it; building
    that text here checks every name against the registry, so a renamed or
    removed format cannot leave a stale hint behind.

    Args:
        *names: Registered format names, in the order to suggest them.

    Returns:
        ``--src-format official-det`` for one name, ``--src-format
        'official' or 'timm'`` for several (quoted, to stand apart from the
        sentence around them).

    Raises:
        KeyError: If a name is not a registered format.
    """
    registered_formats()
    unknown = [name for name in names if name not in SRC_FORMATS]
    if unknown or not names:
        raise KeyError(f'No source format {unknown} is registered; known: '
                       f'{sorted(SRC_FORMATS)}.')
    if len(names) == 1:
        return f'--src-format {names[0]}'
    quoted = [f"'{name}'" for name in names]
    return f'--src-format {", ".join(quoted[:-1])} or {quoted[-1]}'


def add_argument_once(parser: argparse.ArgumentParser, flag: str,
                      **kwargs) -> None:
    """``parser.add_argument(flag, **kwargs)`` unless ``flag`` exists.

    Args:
        parser: The tool's parser.
        flag: The option string, e.g. ``'--num-classes'``.
        **kwargs: As for ``add_argument``.
    """
    if flag not in parser._option_string_actions:
        parser.add_argument(flag, **kwargs)


def meta_model(cfg: 'Config') -> torch.nn.Module:
    """A config's model on the meta device, for its names and shapes.

    Built in the config's default scope, without what would read files or
    draw random numbers and holds no weights: the pretrained
    initialisation and mmaction2's Mixup/CutMix blending.

    Args:
        cfg: A loaded config.

    Returns:
        The model, every tensor on the meta device (no memory).
    """
    from mmengine.registry import MODELS, DefaultScope

    import eva_mm  # noqa: F401  (registers the eva_mm components)

    model_cfg = cfg.model.copy()
    model_cfg.pop('init_cfg', None)
    preprocessor = model_cfg.get('data_preprocessor')
    if isinstance(preprocessor, dict):
        preprocessor.pop('blending', None)
    with DefaultScope.overwrite_default_scope(
            cfg.get('default_scope', 'mmengine')), torch.device('meta'):
        return MODELS.build(model_cfg)


def check_fits_config(state_dict: Mapping[str, torch.Tensor],
                      config: str,
                      cfg_options: Optional[dict] = None) -> None:
    """Refuse weights that would not load strictly into a config's model.

    The model is built on the meta device (no memory for a 1B-parameter
    detector, :func:`meta_model`) and compared key by key with
    ``state_dict`` (parameters and persistent buffers).

    Args:
        state_dict: Converted weights of a whole model.
        config: An OpenMMLab config file.
        cfg_options: Overrides merged into the config first.

    Raises:
        CheckpointMismatchError: Naming every missing, unexpected and
            mis-shaped key.
    """
    from mmengine.config import Config

    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    report = compare_state_dicts(meta_model(cfg).state_dict(), state_dict)
    if not report.fits:
        lines = [f'The converted weights do not fit the model of {config}:']
        for title, keys in (('missing', report.missing),
                            ('unexpected', report.unexpected),
                            ('mis-shaped', report.mismatched)):
            if keys:
                lines.append(f'  {len(keys)} {title}: ' + ', '.join(keys))
        lines.append('Nothing was written. Check that the config is the one '
                     'of this checkpoint (model size, class count, variant) '
                     'and the --src-format.')
        raise CheckpointMismatchError('\n'.join(lines))


def save_converted(conversion: Conversion,
                   dst: str,
                   src: str,
                   src_format: str,
                   converted_by: str = CONVERTER) -> Dict[str, object]:
    """Write ``{'state_dict', 'meta'}`` of plain, contiguous fp32 tensors.

    Args:
        conversion: The converter's result.
        dst: The output file; its folder is created.
        src: The source file, recorded in ``meta``.
        src_format: The source format, recorded in ``meta``.
        converted_by: The tool that converted, recorded in ``meta``.

    Returns:
        The ``meta`` written.
    """
    # Fresh storages: a view (DeepSpeed keeps parameters in flat buffers)
    # would otherwise save the whole buffer it looks into.
    weights = {
        key: value.clone(memory_format=torch.contiguous_format)
        for key, value in conversion.state_dict.items()
    }
    meta = dict(
        converted_by=converted_by,
        src=os.path.basename(src),
        src_format=src_format,
        num_params=sum(v.numel() for v in weights.values()),
        **conversion.meta)
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    torch.save({'state_dict': weights, 'meta': meta}, dst)
    return meta
