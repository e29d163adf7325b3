"""Map a Kinetics-722 video checkpoint's head to K-400/600/700.

EVA's K-400/600/700 fine-tuning starts from the K-722 intermediate model
with its linear head cut down to the target label set: the row of every
target class is the K-722 row of the same class. The official code ships
that choice as ``data/k722_to_k4xx_mapping.npy`` files and indexes the head
with them (``head[mask]``, ``EVA-01/video/models/clip_mae.py:246-255``);
this tool takes either such a file or the two label lists, and writes the
checkpoint for ``load_from`` of the configs in ``configs/video``::

    python tools/model_converters/kinetics_head_mapping.py \\
        work_dirs/eva-g-p14_k722-intermediate-ft_8x224/epoch_40.pth \\
        checkpoints/eva_video_k722_to_k400.pth \\
        --source-labels labels/kinetics722_labels.csv \\
        --target-labels labels/kinetics400_labels.csv
    # or, with the official mask:
    python tools/model_converters/kinetics_head_mapping.py \\
        work_dirs/.../epoch_40.pth checkpoints/eva_video_k722_to_k400.pth \\
        --mapping data/k722_to_k400_mapping.npy

A mapping file is a boolean mask over the source classes (rows kept in
source order, as ``head[mask]`` does) or an integer array of source rows,
one per target class in target order. Label files hold one class name per
line, in label order, or are the official ``labels/kinetics*_labels.csv``
(``id,name`` with a header). Names are compared case-insensitively, with
``_`` read as a space and surrounding quotes and spaces dropped; the two
K-400 classes that Kinetics-600 renamed (``changing wheel`` -> ``changing
wheel (not on bike)``, ``cooking sausages`` -> ``cooking sausages (not on
barbeque)``, which is how K-722 names them) match under either name. A
target class without a source class is an error naming all of them.
"""
import argparse
import csv
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

# Run from a checkout without installing eva_mm.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from eva_mm.engine.safe_checkpoint import (  # noqa: E402
    register_mmengine_safe_globals)
from eva_mm.checkpoints.converters import (  # noqa: E402
    Conversion, save_converted)
from eva_mm.checkpoints.errors import CheckpointError  # noqa: E402
from eva_mm.checkpoints.reading import load_state_dict_file  # noqa: E402
from eva_mm.checkpoints.state_dict import StateDict  # noqa: E402

# Checkpoints written by mmengine's runner hold more than tensors.
register_mmengine_safe_globals()

HEAD_PREFIX = 'cls_head.fc_cls.'

# Kinetics-400 names that Kinetics-600/700 (and so K-722) changed, in the
# normalised form of normalize_name (official label lists:
# EVA-01/video/labels/kinetics400_labels.csv ids 53 and 73,
# kinetics722_labels.csv ids 94 and 126).
RENAMED_K400 = {
    'changing wheel': 'changing wheel (not on bike)',
    'cooking sausages': 'cooking sausages (not on barbeque)',
}


def normalize_name(name: str) -> str:
    """The form in which class names of two label lists are compared."""
    return ' '.join(name.strip().strip('"\'').replace('_',
                                                      ' ').lower().split())


def read_labels(path: str) -> List[str]:
    """Class names in label order from a list or an ``id,name`` CSV file."""
    with open(path, newline='') as f:
        lines = [line for line in f.read().splitlines() if line.strip()]
    if path.endswith('.csv'):
        rows = list(csv.reader(lines))
        if rows and rows[0] == ['id', 'name']:
            rows = rows[1:]
        by_id = {int(row[0]): row[1] for row in rows}
        if sorted(by_id) != list(range(len(by_id))):
            raise ValueError(f'{path}: the ids are not 0..{len(by_id) - 1}.')
        return [by_id[i] for i in range(len(by_id))]
    return [line.strip() for line in lines]


def class_mapping(source: Sequence[str], target: Sequence[str]) -> List[int]:
    """For each target class, the index of the source class of that name.

    A K-400 name that Kinetics-600 changed (:data:`RENAMED_K400`) matches
    the source class of either name.

    Args:
        source: Class names of the checkpoint's head, in row order.
        target: Class names of the target dataset, in label order.

    Returns:
        The source row of each target class.

    Raises:
        ValueError: If names repeat in ``source`` or some target class has
            no source class.
    """
    index: Dict[str, int] = {}
    for i, name in enumerate(source):
        key = normalize_name(name)
        if key in index:
            raise ValueError(f'Source class {name!r} appears twice.')
        index[key] = i
    # Each renamed class is reachable under its other name as well, unless
    # the source lists both names as separate classes.
    for old, new in RENAMED_K400.items():
        for name, other in ((old, new), (new, old)):
            if name in index and other not in index:
                index[other] = index[name]
    missing = [name for name in target if normalize_name(name) not in index]
    if missing:
        raise ValueError(
            f'{len(missing)} target class(es) have no source class of the '
            f'same name: {missing}.')
    return [index[normalize_name(name)] for name in target]


def read_mapping(path: str,
                 num_source: int,
                 num_target: Optional[int] = None) -> List[int]:
    """The source rows of an official ``k722_to_k*_mapping.npy`` file.

    Args:
        path: A ``.npy`` file: a boolean mask of ``num_source`` entries (the
            rows kept, in source order, as the official ``head[mask]``) or
            integer source rows, one per target class.
        num_source: Rows of the checkpoint's head.
        num_target: Classes of the target dataset, when known (from
            ``--target-labels``), to check the mapping against.

    Returns:
        The source row of each target class.

    Raises:
        ValueError: If the file is not such an array or does not fit.
    """
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f'{path}: not a NumPy .npy array ({err}).') from err
    array = np.asarray(array).reshape(-1)
    if array.dtype == np.bool_:
        if array.size != num_source:
            raise ValueError(
                f'{path}: a mask of {array.size} entries, but the head has '
                f'{num_source} classes.')
        rows = np.flatnonzero(array).tolist()
    elif np.issubdtype(array.dtype, np.integer):
        rows = array.tolist()
        bad = [row for row in rows if not 0 <= row < num_source]
        if bad:
            raise ValueError(f'{path}: rows {bad[:10]} are outside the '
                             f'{num_source} classes of the head.')
    else:
        raise ValueError(
            f'{path}: dtype {array.dtype}; expected a boolean mask or '
            'integer row indices.')
    if num_target is not None and len(rows) != num_target:
        raise ValueError(f'{path}: selects {len(rows)} classes, but the '
                         f'target labels list {num_target}.')
    return rows


def map_head(state_dict: StateDict,
             mapping: Sequence[int],
             prefix: str = HEAD_PREFIX) -> StateDict:
    """Keep the head rows of ``mapping``, in its order; the rest unchanged.

    Args:
        state_dict: Weights of a recognizer with a linear head.
        mapping: Source row of each target class.
        prefix: The head's parameter prefix (mmaction2's ``cls_head.fc_cls.``
            of ``TimeSformerHead``/``I3DHead``).

    Returns:
        A new state dict with ``weight`` (and ``bias``) of the head cut down.
    """
    keys = [prefix + 'weight', prefix + 'bias']
    if keys[0] not in state_dict:
        raise KeyError(f'No {keys[0]!r} in the checkpoint; give the head '
                       'prefix with --head-prefix.')
    rows = torch.as_tensor(list(mapping), dtype=torch.long)
    mapped = dict(state_dict)
    for key in keys:
        if key in mapped:
            mapped[key] = mapped[key].index_select(0, rows).clone()
    return mapped


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Command-line entry point.

    Args:
        argv: Arguments without the program name; ``None`` reads sys.argv.
    """
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='K-722 recognizer checkpoint')
    parser.add_argument('dst', help='output checkpoint')
    parser.add_argument('--mapping',
                        help='official k722_to_k*_mapping.npy (boolean mask '
                        'or integer rows); replaces the label lists')
    parser.add_argument('--source-labels',
                        help='class names of the checkpoint head')
    parser.add_argument('--target-labels',
                        help='class names of the target dataset')
    parser.add_argument('--head-prefix', default=HEAD_PREFIX)
    args = parser.parse_args(argv)
    if args.mapping is None and not (args.source_labels
                                     and args.target_labels):
        parser.error('give --mapping, or both --source-labels and '
                     '--target-labels')

    try:
        convert(args)
    except (FileNotFoundError, CheckpointError, KeyError, ValueError) as err:
        raise SystemExit(f'kinetics_head_mapping.py: error: {err}') from err


def convert(args: argparse.Namespace) -> None:
    """Map the head of ``args.src`` and write ``args.dst``.

    Args:
        args: The parsed command line.
    """
    state_dict = load_state_dict_file(args.src)
    weight_key = args.head_prefix + 'weight'
    if weight_key not in state_dict:
        raise ValueError(f'No {weight_key!r} in the checkpoint; give the head '
                         'prefix with --head-prefix.')
    rows = state_dict[weight_key].shape[0]
    target = read_labels(args.target_labels) if args.target_labels else None
    if args.mapping is not None:
        mapping = read_mapping(args.mapping, rows,
                               None if target is None else len(target))
    else:
        source = read_labels(args.source_labels)
        if rows != len(source):
            raise ValueError(f'The head has {rows} classes but '
                             f'{args.source_labels} lists {len(source)}.')
        mapping = class_mapping(source, target)
    mapped = map_head(state_dict, mapping, args.head_prefix)
    save_converted(
        Conversion(mapped),
        args.dst,
        args.src,
        'eva_mm',
        converted_by='tools/model_converters/kinetics_head_mapping.py')
    print(f'Wrote {args.dst}: head mapped from {rows} to {len(mapping)} '
          'classes.')


if __name__ == '__main__':
    main()
