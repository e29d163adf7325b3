"""Pre-flight check of a config's data set: every listed file decoded.

Builds the dataset of one split as the config does but without its
pipeline (so without any randomness: the data list only), then decodes
every image (or video) it lists in ``--workers`` processes, with a progress
bar, and reports:

- ``missing``: a listed file that does not exist;
- ``unreadable``: a file that does not decode completely (Pillow for images,
  which raises on truncated data; decord, or OpenCV, for videos at their
  first and last frame);
- ``size``: an image whose decoded size (after its EXIF orientation, as the
  loaders read it) differs from the annotation's width and height (COCO,
  LVIS, Objects365);
- ``label_size``: a segmentation label map whose size differs from its
  image's;
- ``empty``: a detection image without an instance to train on (none, or
  only crowd/ignored ones).

It prints the number of each fault and the faulty files, writes them all
with ``--out`` as JSON, and exits with 1 if there is any fault (``empty``
ones not counted with ``--allow-empty``: COCO 2017 has images without
annotations, which the training config filters out anyway), else 0.

Example::

    python tools/analysis/check_dataset.py \\
        configs/detection/eva-g-p16_cascade-mask-rcnn_lsj-1280_coco.py \\
        --split train --workers 8 --out work_dirs/coco_train_check.json
"""
import argparse
import copy
import json
import os.path as osp
import sys
import time
from collections import Counter
from typing import Dict, List

from mmengine.config import Config, DictAction
from mmengine.registry import DATASETS, init_default_scope
from mmengine.utils import track_parallel_progress, track_progress

from common import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))
from eva_mm.datasets.unreadable import decode, format_files  # noqa: E402
from eva_mm.engine.cli import warn_new_keys  # noqa: E402

KINDS = ('missing', 'unreadable', 'size', 'label_size', 'empty')


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Decode every file of a config\'s data set and report '
        'missing, unreadable, mis-sized and empty samples.')
    parser.add_argument('config', help='config file')
    parser.add_argument(
        '--split', choices=('train', 'val', 'test'), default='train',
        help='which dataloader\'s dataset to check')
    parser.add_argument(
        '--workers', type=int, default=4,
        help='decoding processes (1: in this process)')
    parser.add_argument('--out', help='write the report here as JSON')
    parser.add_argument(
        '--allow-empty', action='store_true',
        help='report images without instances but exit 0 for them')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config entries, e.g. '
        'train_dataloader.dataset.data_root=/data/coco/')
    return parser.parse_args()


def _without_pipelines(node: object) -> object:
    """A dataset config with every pipeline, wrapped ones included, empty."""
    if isinstance(node, dict):
        return {
            key: [] if key == 'pipeline' else _without_pipelines(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_without_pipelines(value) for value in node]
    return node


def build_samples(cfg: Config, split: str) -> List[dict]:
    """What to check of each sample of ``split``'s dataset.

    Args:
        cfg: The config.
        split: ``train``, ``val`` or ``test``.

    Returns:
        Per distinct sample: ``image`` (an image or video path), ``label_map``
        (or None), the annotation's ``width`` and ``height`` (or None) and
        the number of ``instances`` to train on (None where the dataset has
        no instances).
    """
    loader = cfg.get(f'{split}_dataloader')
    if not loader:
        raise SystemExit(f'{cfg.filename} has no {split}_dataloader.')
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    dataset_cfg = _without_pipelines(copy.deepcopy(loader['dataset']))
    dataset = DATASETS.build(dataset_cfg)
    if hasattr(dataset, 'full_init'):
        dataset.full_init()
    samples: Dict[tuple, dict] = {}
    for index in range(len(dataset)):
        info = dataset.get_data_info(index)
        image = info.get('img_path') or info.get('filename')
        if image is None:
            raise SystemExit(
                f'{type(dataset).__name__} names no image or video of its '
                'samples (img_path, filename): nothing to check.')
        instances = info.get('instances')
        sample = dict(
            image=image,
            label_map=info.get('seg_map_path'),
            width=info.get('width'),
            height=info.get('height'),
            instances=None if instances is None else sum(
                not instance.get('ignore_flag', 0)
                for instance in instances))
        # Wrappers such as RepeatDataset list a sample more than once.
        samples.setdefault((sample['image'], sample['label_map']), sample)
    return list(samples.values())


def inspect(sample: dict) -> List[dict]:
    """The faults of one sample (see the module docstring).

    Args:
        sample: One item of :func:`build_samples`.

    Returns:
        Dicts of ``kind``, ``path`` and ``reason``.
    """
    faults = []
    sizes = {}
    for role in ('image', 'label_map'):
        path = sample[role]
        if not path:
            continue
        if not osp.isfile(path):
            faults.append(
                dict(kind='missing', path=path, reason='no such file'))
            continue
        size, reason = decode(path)
        if reason:
            faults.append(dict(kind='unreadable', path=path, reason=reason))
        else:
            sizes[role] = size
    image = sizes.get('image')
    # (fault, file, its size, what it should match)
    comparisons = (
        ('size', sample['image'], ('decoded', image),
         ('annotated', (sample['width'], sample['height']))),
        ('label_size', sample['label_map'],
         ('label map', sizes.get('label_map')), ('image', image)),
    )
    for kind, path, (name, size), (other_name, other) in comparisons:
        if size and other and None not in other and size != other:
            faults.append(
                dict(
                    kind=kind,
                    path=path,
                    reason=f'{name} {size[0]} x {size[1]}, {other_name} '
                    f'{other[0]} x {other[1]}'))
    if sample['instances'] == 0:
        faults.append(
            dict(
                kind='empty', path=sample['image'],
                reason='no instance to train on'))
    return faults


def check(samples: List[dict], workers: int) -> List[dict]:
    """Every fault of ``samples``, decoded in ``workers`` processes."""
    if workers > 1:
        # Chunks of samples per task keep the inter-process traffic small
        # next to the decoding.
        results = track_parallel_progress(
            inspect, samples, workers,
            chunksize=max(1, min(64, len(samples) // (workers * 16))))
    else:
        results = track_progress(inspect, samples)
    return [fault for faults in results for fault in faults]


def main() -> int:
    args = parse_args()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        warn_new_keys(cfg, args.cfg_options)
        cfg.merge_from_dict(args.cfg_options)
    samples = build_samples(cfg, args.split)
    num_files = sum(1 + bool(s['label_map']) for s in samples)
    start = time.perf_counter()
    faults = check(samples, args.workers)
    seconds = time.perf_counter() - start
    counts = Counter(fault['kind'] for fault in faults)
    print(f'\n{args.config}, {args.split} split: {len(samples)} samples, '
          f'{num_files} files decoded in {seconds:.1f} s '
          f'({num_files / seconds:.0f} files/s, {args.workers} workers).')
    for kind in KINDS:
        listed = [f for f in faults if f['kind'] == kind]
        print(f'{kind}: {len(listed)}')
        if listed:
            print(format_files(listed))
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(
                dict(
                    config=args.config,
                    split=args.split,
                    num_samples=len(samples),
                    num_files=num_files,
                    seconds=seconds,
                    workers=args.workers,
                    counts={kind: counts[kind]
                            for kind in KINDS},
                    faults=faults),
                f,
                indent=2)
    failing = sum(n for kind, n in counts.items()
                  if not (kind == 'empty' and args.allow_empty))
    return 1 if failing else 0


if __name__ == '__main__':
    sys.exit(main())
