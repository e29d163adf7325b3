"""Map a Kinetics-722 video checkpoint's head to K-400/600/700 by class name.

EVA's K-400/600/700 fine-tuning starts from the K-722 intermediate model
with its linear head cut down to the target label set: the row of every
target class is the K-722 row of the class with the same name (the official
code ships this as ``k722_to_k400_mapping.npy``). This tool writes that
checkpoint for ``load_from`` of the configs in ``configs/video``::

    python tools/model_converters/kinetics_head_mapping.py \\
        work_dirs/eva-g-p14_k722-intermediate-ft_8x224/epoch_40.pth \\
        --source-labels data/k722_labels.txt \\
        --target-labels data/k400_labels.txt \\
        checkpoints/eva_video_k722_to_k400.pth

Label files hold one class name per line, in label order, or are the
official ``labels/kinetics*_labels.csv`` (``id,name`` with a header). Names
are compared case-insensitively, with ``_`` read as a space and surrounding
quotes and spaces dropped. A target class without a source class is an
error naming all of them.
"""
import argparse
import csv
import os
import sys
from pathlib import Path
from typing import Dict, List, Sequence

import torch

# Run from a checkout without installing eva_mm.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import eva_mm.engine  # noqa: E402,F401  (allow-lists mmengine's pickles)
from eva_mm.models.utils.checkpoint import (  # noqa: E402
    StateDict, load_state_dict_file)

HEAD_PREFIX = 'cls_head.fc_cls.'


def normalize_name(name: str) -> str:
    """The form in which class names of two label lists are compared."""
    return ' '.join(name.strip().strip('"\'').replace('_', ' ').lower()
                    .split())


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


def class_mapping(source: Sequence[str],
                  target: Sequence[str]) -> List[int]:
    """For each target class, the index of the source class of that name.

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
    missing = [name for name in target if normalize_name(name) not in index]
    if missing:
        raise ValueError(
            f'{len(missing)} target class(es) have no source class of the '
            f'same name: {missing}.')
    return [index[normalize_name(name)] for name in target]


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


def main(argv: Sequence[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='K-722 recognizer checkpoint')
    parser.add_argument('dst', help='output checkpoint')
    parser.add_argument('--source-labels', required=True,
                        help='class names of the checkpoint head')
    parser.add_argument('--target-labels', required=True,
                        help='class names of the target dataset')
    parser.add_argument('--head-prefix', default=HEAD_PREFIX)
    args = parser.parse_args(argv)

    source = read_labels(args.source_labels)
    target = read_labels(args.target_labels)
    state_dict = load_state_dict_file(args.src)
    rows = state_dict[args.head_prefix + 'weight'].shape[0] \
        if args.head_prefix + 'weight' in state_dict else None
    if rows is not None and rows != len(source):
        raise ValueError(f'The head has {rows} classes but '
                         f'{args.source_labels} lists {len(source)}.')
    mapped = map_head(state_dict, class_mapping(source, target),
                      args.head_prefix)
    os.makedirs(os.path.dirname(os.path.abspath(args.dst)), exist_ok=True)
    torch.save(dict(state_dict=mapped), args.dst)
    print(f'Wrote {args.dst}: head mapped from {len(source)} to '
          f'{len(target)} classes.')


if __name__ == '__main__':
    main()
