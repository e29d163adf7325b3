"""Unreadable data files: training skips them with a record, evaluation
names them (eva_mm.UnreadableDataHook, eva_mm.datasets.unreadable).

Faults are planted in generated sets: a PNG cut to half its bytes (its
header still reads), a deleted file, a file of random bytes.
"""
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import DefaultSampler, pseudo_collate
from mmengine.registry import DATASETS
from mmengine.runner import Runner
from mmpretrain.structures import DataSample
from torch.utils.data import DataLoader
from train_runs import run_tool, train_cmd, write_classifier_run

from eva_mm.datasets import (GuardedPipeline, RepeatFactorSampler,
                             UnreadableDataError)
from eva_mm.datasets.synthetic import (DEMO_SHAPES_CLASSES, generate_demo_ade,
                                       generate_demo_lvis, generate_demo_shapes)
from eva_mm.datasets.unreadable import (SKIPPED_KEY, check_header,
                                        guard_pipelines, pop_skipped)
from eva_mm.engine import UnreadableDataHook

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / 'configs/demo/eva-demo-p8_cascade-mask-rcnn_shapes.py'
SEG_DEMO = (ROOT / 'configs/segmentation/demo/'
            'eva-demo-p8_vit-adapter_mask2former_ade-shapes.py')
LVIS_DATA = ROOT / 'configs/_base_/datasets/lvis-v1-instance_lsj-1024.py'
MIM_DEMO = ROOT / 'configs/mim/eva-mim_demo-tiny-p8_clip-tiny_shapes.py'
TINY_SET = dict(num_train=8, num_val=4, img_size=64, seed=3)


def truncate(path: Path) -> None:
    """Keep the first half of the file's bytes."""
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


@pytest.fixture
def shapes(tmp_path) -> Path:
    """The demo shapes set, its train images 2 cut short and 5 deleted."""
    generate_demo_shapes(str(tmp_path), **TINY_SET)
    truncate(tmp_path / 'train/000002.png')
    os.remove(tmp_path / 'train/000005.png')
    return tmp_path


BAD = ('train/000002.png', 'train/000005.png')


def _demo_dataset(root: Path, split: str = 'train'):
    cfg = Config.fromfile(str(DEMO))
    dataset_cfg = cfg[f'{split}_dataloader'].dataset
    dataset_cfg.data_root = str(root)
    return DATASETS.build(dataset_cfg)


def _draw_all(dataset) -> Tuple[List[str], List[dict]]:
    """Every index once: the delivered images and the skipped entries."""
    delivered, skipped = [], []
    for index in range(len(dataset)):
        sample = dataset[index]
        delivered.append(sample['data_samples'].img_path)
        skipped += pop_skipped(dict(data_samples=[sample['data_samples']]))[1]
    return delivered, skipped


@pytest.mark.registry_scope('mmdet')
def test_training_pipeline_skips_unreadable_images_and_hands_them_on(
        shapes):
    dataset = _demo_dataset(shapes)
    assert guard_pipelines(dataset, skip=True) == 1
    np.random.seed(0)  # mmengine's refetch draws with numpy
    delivered, skipped = _draw_all(dataset)
    bad = {str(shapes / name) for name in BAD}
    assert len(delivered) == len(dataset) == 8
    assert not bad & set(delivered)
    # Each bad index was tried (then replaced), so each is named, with the
    # loader's reason; refetches may name one again.
    assert {entry['path'] for entry in skipped} == bad
    reasons = {entry['path']: entry['reason'] for entry in skipped}
    assert 'failed to load image' in reasons[str(shapes / BAD[0])]
    assert 'No such file' in reasons[str(shapes / BAD[1])]
    # pop_skipped took the files out of the metainfo: the model never
    # sees them.
    again = dataset[0]['data_samples']
    assert SKIPPED_KEY not in again


@pytest.mark.registry_scope('mmdet')
def test_errors_of_other_transforms_and_in_evaluation_are_raised(shapes):
    dataset = _demo_dataset(shapes)
    bad_index = next(i for i in range(len(dataset)) if dataset.get_data_info(
        i)['img_path'].endswith(BAD[0]))
    info = dataset.get_data_info(bad_index)

    def augment(results: dict) -> dict:
        raise AssertionError('a bug in an augmentation')

    # The exception type of mmcv's failed load, raised by a transform that
    # reads nothing, is a bug: it propagates.
    broken = GuardedPipeline(
        dataset.pipeline.transforms[:2] + [augment], skip=True)
    with pytest.raises(AssertionError, match='a bug in an augmentation'):
        broken(dataset.get_data_info((bad_index + 1) % len(dataset)))
    # Evaluation: the file is named, with what to do.
    strict = GuardedPipeline(
        dataset.pipeline.transforms, skip=False, advice='Run the check.')
    with pytest.raises(UnreadableDataError) as error:
        strict(info)
    assert info['img_path'] in str(error.value)
    assert 'Run the check.' in str(error.value)
    # Training: more unreadable files in a row than max_files (nothing gets
    # through to carry them) stops in the worker, listing them.
    guarded = GuardedPipeline(dataset.pipeline.transforms, skip=True,
                              max_files=1)
    missing = dataset.get_data_info(next(
        i for i in range(len(dataset))
        if dataset.get_data_info(i)['img_path'].endswith(BAD[1])))
    assert guarded(info) is None
    with pytest.raises(UnreadableDataError, match='in a row') as error:
        guarded(missing)
    assert info['img_path'] in str(error.value)
    assert missing['img_path'] in str(error.value)


@pytest.mark.registry_scope('mmdet')
def test_reader_errors_that_are_no_file_fault_are_raised(shapes):
    dataset = _demo_dataset(shapes)
    guarded = GuardedPipeline(dataset.pipeline.transforms, skip=True)
    good = dataset.get_data_info(0)
    # A config error: no file to name.
    no_path = {k: v for k, v in good.items() if k != 'img_path'}
    with pytest.raises(KeyError, match='img_path'):
        guarded(no_path)
    # Detection annotations come from the data list, not a file: a bad box
    # is the annotations' fault.
    broken_box = dict(good, instances=[dict(good['instances'][0],
                                            bbox=[0, 0])])
    with pytest.raises(Exception) as error:
        guarded(broken_box)
    assert not isinstance(error.value, UnreadableDataError)


@pytest.mark.registry_scope('mmdet')
def test_one_bad_file_drawn_again_counts_each_time(shapes):
    dataset = _demo_dataset(shapes)
    info = next(dataset.get_data_info(i) for i in range(len(dataset))
                if dataset.get_data_info(i)['img_path'].endswith(BAD[0]))
    guarded = GuardedPipeline(dataset.pipeline.transforms, skip=True,
                              max_files=2)
    assert guarded(info) is None and guarded(info) is None
    with pytest.raises(UnreadableDataError, match='3 unreadable'):
        guarded(info)


def test_header_check_leaves_remote_files_to_the_loader():
    assert check_header('s3://bucket/train/000001.jpg') is None


@pytest.mark.registry_scope('mmdet')
@pytest.mark.parametrize('sampler', ['default', 'repeat_factor'])
def test_epochs_keep_their_length_in_worker_processes(shapes, sampler):
    dataset = _demo_dataset(shapes)
    guard_pipelines(dataset, skip=True)
    if sampler == 'default':
        sampler = DefaultSampler(dataset, shuffle=True, seed=0)
    else:
        # Every image repeated 1-3 times by its rarest shape.
        sampler = RepeatFactorSampler(dataset, repeat_thr=0.9, seed=0)
    loader = DataLoader(
        dataset, batch_size=3, sampler=sampler, num_workers=2,
        collate_fn=pseudo_collate)
    bad = {str(shapes / name) for name in BAD}
    drawn_bad = sum(dataset.get_data_info(i)['img_path'] in bad
                    for i in sampler)
    assert drawn_bad > 0
    delivered, skipped = 0, []
    for batch in loader:
        samples, entries = pop_skipped(batch)
        delivered += samples
        skipped += entries
        assert not bad & {s.img_path for s in batch['data_samples']}
    # The sampler's epoch, whole: every bad index was replaced in place.
    assert delivered == len(sampler)
    assert len(skipped) >= drawn_bad
    assert {entry['path'] for entry in skipped} == bad


@pytest.mark.parametrize('task', [
    pytest.param('lvis', marks=pytest.mark.registry_scope('mmdet')),
    pytest.param('mim', marks=pytest.mark.registry_scope('mmpretrain'))
])
def test_lvis_and_mim_datasets_skip_the_same_way(shapes, task):
    """eva_mm.LVISV1Dataset with the LVIS data base's LSJ pipeline, and
    mmpretrain's CustomDataset with the MIM demo's masking pipeline."""
    bad = {str(shapes / name) for name in BAD}
    if task == 'lvis':
        generate_demo_lvis(str(shapes), **TINY_SET)  # adds the LVIS files
        cfg = Config.fromfile(str(LVIS_DATA))
        dataset_cfg = cfg.train_dataloader.dataset
        dataset_cfg.update(
            data_root=str(shapes),
            data_prefix=dict(img='train/'),
            ann_file='annotations/lvis_v1_train.json',
            metainfo=dict(classes=DEMO_SHAPES_CLASSES))
    else:
        cfg = Config.fromfile(str(MIM_DEMO))
        dataset_cfg = cfg.train_dataloader.dataset
        dataset_cfg.data_root = str(shapes / 'train')
        # CustomDataset lists the files it finds: the missing one is gone,
        # so leave it in place and cut it short instead.
        generate_demo_shapes(str(shapes / 'again'), **TINY_SET)
        shutil.copy(shapes / 'again' / BAD[1], shapes / BAD[1])
        truncate(shapes / BAD[1])
    dataset = DATASETS.build(dataset_cfg)
    assert guard_pipelines(dataset, skip=True) == 1
    np.random.seed(0)
    delivered, skipped = _draw_all(dataset)
    assert len(delivered) == 8 and not bad & set(delivered)
    assert {entry['path'] for entry in skipped} == bad


@pytest.mark.registry_scope('mmseg')
def test_unreadable_label_map_is_named(tmp_path):
    generate_demo_ade(str(tmp_path), num_train=4, num_val=2, img_size=32)
    label_map = tmp_path / 'annotations/training/000001.png'
    truncate(label_map)
    cfg = Config.fromfile(str(SEG_DEMO))
    dataset_cfg = cfg.train_dataloader.dataset
    dataset_cfg.data_root = str(tmp_path)
    dataset = DATASETS.build(dataset_cfg)
    guard_pipelines(dataset, skip=True)
    np.random.seed(0)
    delivered, skipped = _draw_all(dataset)
    assert len(delivered) == 4
    assert {entry['path'] for entry in skipped} == {str(label_map)}
    assert 'LoadAnnotations' in skipped[0]['reason']


def test_header_check(tmp_path):
    generate_demo_shapes(str(tmp_path), **TINY_SET)
    image = tmp_path / 'val/000000.png'
    assert check_header(str(image)) is None
    truncate(image)
    # A truncated image keeps its header: found when decoded, not here.
    assert check_header(str(image)) is None
    (tmp_path / 'empty.png').write_bytes(b'')
    assert check_header(str(tmp_path / 'empty.png')) == 'the file is empty'
    (tmp_path / 'noise.png').write_bytes(np.random.bytes(300))
    assert 'cannot identify' in check_header(str(tmp_path / 'noise.png'))
    assert 'No such file' in check_header(str(tmp_path / 'gone.png'))


def _hook_runner(tmp_path: Path, **hook) -> Tuple[Runner, UnreadableDataHook]:
    cfg = Config.fromfile(str(write_classifier_run(tmp_path)))
    cfg.work_dir = str(tmp_path / 'work')
    cfg.default_hooks.unreadable_data = dict(
        type='eva_mm.UnreadableDataHook', **hook)
    runner = Runner.from_cfg(cfg)
    found = [h for h in runner.hooks if isinstance(h, UnreadableDataHook)]
    return runner, found[0]


def _batch(num_samples: int, skipped: List[str]) -> dict:
    samples = [DataSample() for _ in range(num_samples)]
    if skipped:
        samples[0].set_metainfo({
            SKIPPED_KEY: [dict(path=p, reason='test') for p in skipped]
        })
    return dict(inputs=torch.zeros(num_samples, 3, 4, 4),
                data_samples=samples)


@pytest.mark.registry_scope('mmpretrain')
def test_hook_counts_and_stops_at_the_fraction(tmp_path):
    runner, hook = _hook_runner(
        tmp_path, max_files=10, max_fraction=0.2, min_samples=20)
    # 3 skips in 8 drawn: above 0.2, but fewer than min_samples drawn.
    hook.before_train_iter(runner, 0, _batch(5, ['a.png', 'b.png', 'a.png']))
    log = Path(runner.log_dir, f'{runner.timestamp}.log').read_text()
    assert 'training file at iteration 1: a.png: test' in log
    assert 'training file at iteration 1: b.png: test' in log
    assert (hook.drawn, hook.skips, len(hook.files)) == (8, 3, 2)
    assert hook.files['a.png']['skips'] == 2
    summary = json.loads((tmp_path / 'work/skipped_files.json').read_text())
    assert [f['path'] for f in summary['files']] == ['a.png', 'b.png']
    assert summary['num_skips'] == 3
    checkpoint = {}
    hook.before_save_checkpoint(runner, checkpoint)
    assert checkpoint['unreadable_data']['drawn'] == 8
    hook.before_train_iter(runner, 1, _batch(10, []))  # 3 / 18
    # 3 + 1 skips in 24 drawn: 0.17, still under 0.2.
    hook.before_train_iter(runner, 2, _batch(5, ['c.png']))
    with pytest.raises(UnreadableDataError) as error:
        hook.before_train_iter(runner, 3, _batch(1, ['c.png', 'd.png']))
    message = str(error.value)
    assert 'max_fraction=0.2' in message
    assert all(name in message for name in ('a.png', 'b.png', 'c.png',
                                            'd.png'))


@pytest.mark.registry_scope('mmpretrain')
def test_hook_stops_past_max_files(tmp_path):
    runner, hook = _hook_runner(tmp_path, max_files=2)
    hook.before_train_iter(runner, 0, _batch(4, ['a.png', 'b.png']))
    with pytest.raises(UnreadableDataError, match='max_files=2') as error:
        hook.before_train_iter(runner, 1, _batch(4, ['c.png']))
    assert re.search(r'a\.png.*\n.*b\.png.*\n.*c\.png', str(error.value))
    with pytest.raises(ValueError, match='max_fraction'):
        UnreadableDataHook(max_fraction=2.0)


@pytest.mark.parametrize('config', sorted(
    str(p.relative_to(ROOT)) for p in (ROOT / 'configs').rglob('*.py')
    if '_base_' not in p.parts))
def test_every_eva_config_has_the_hook(config):
    cfg = Config.fromfile(str(ROOT / config))
    hooks = cfg.get('default_hooks') or {}
    assert hooks.get('unreadable_data', {}).get('type') == \
        'eva_mm.UnreadableDataHook', config


# ----------------------------------------------------------- training runs
def _tiny_demo(root: Path, work_dir: Path, max_iters: int = 8,
               num_workers: int = 0) -> Config:
    """The demo config at 64 px with a 2-block backbone."""
    cfg = Config.fromfile(str(DEMO))
    cfg.work_dir = str(work_dir)
    cfg.model.backbone.img_size = TINY_SET['img_size']
    cfg.model.backbone.arch.num_layers = 2
    cfg.model.backbone.global_block_indexes = (1, )
    size = (TINY_SET['img_size'], ) * 2
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = str(root)
        for transform in cfg[loader].dataset.pipeline:
            if transform.type == 'Resize':
                transform.scale = size
    cfg.train_dataloader.update(
        batch_size=2, num_workers=num_workers,
        persistent_workers=num_workers > 0)
    cfg.val_evaluator.ann_file = cfg.test_evaluator.ann_file = str(
        root / 'annotations/instances_val.json')
    cfg.train_cfg.update(max_iters=max_iters, val_interval=max_iters)
    cfg.param_scheduler = []
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint.interval = max_iters
    return cfg


@pytest.mark.slow
def test_demo_training_skips_and_summarises_exactly_the_bad_files(
        shapes, tmp_path):
    # Two workers (persistent): the hook rebuilds the iteration-based
    # loop's loader. 8 iterations of 2 = two epochs of the 8 images, so
    # every image is drawn.
    work_dir = tmp_path / 'work'
    runner = Runner.from_cfg(_tiny_demo(shapes, work_dir, num_workers=2))
    runner.train()
    assert runner.iter == 8
    bad = {str(shapes / name) for name in BAD}
    summary = json.loads((work_dir / 'skipped_files.json').read_text())
    assert {f['path'] for f in summary['files']} == bad
    assert summary['num_files'] == 2
    assert summary['num_skips'] == sum(f['skips'] for f in summary['files'])
    assert summary['samples_drawn'] == 8 * 2 + summary['num_skips']
    log = next(work_dir.glob('*/*.log')).read_text()
    named = set(re.findall(r'Skipped an unreadable training file at '
                           r'iteration \d+: (\S+):', log))
    assert named == bad


@pytest.mark.slow
def test_demo_training_stops_past_the_limit(shapes, tmp_path):
    truncate(shapes / 'train/000006.png')
    bad = {str(shapes / name) for name in BAD + ('train/000006.png', )}
    cfg = _tiny_demo(shapes, tmp_path / 'work', max_iters=40)
    cfg.default_hooks.unreadable_data.max_files = 2
    runner = Runner.from_cfg(cfg)
    with pytest.raises(UnreadableDataError, match='max_files=2') as error:
        runner.train()
    assert runner.iter < 40
    listed = set(re.findall(r'^  (\S+): ', str(error.value), re.MULTILINE))
    assert listed == bad
    summary = json.loads((tmp_path / 'work/skipped_files.json').read_text())
    assert {f['path'] for f in summary['files']} == bad


@pytest.mark.slow
def test_unreadable_test_image_stops_evaluation_naming_it(tmp_path):
    generate_demo_shapes(str(tmp_path), **TINY_SET)
    # Random bytes: found by the header check, before any inference.
    noise = tmp_path / 'val/000001.png'
    noise.write_bytes(np.random.default_rng(0).bytes(500))
    runner = Runner.from_cfg(_tiny_demo(tmp_path, tmp_path / 'work'))
    with pytest.raises(UnreadableDataError) as error:
        runner.test()
    assert 'of the test set cannot be read' in str(error.value)
    assert str(noise) in str(error.value)
    assert 'check_dataset.py' in str(error.value)
    # Cut short after a good header: named when the loader reaches it.
    generate_demo_shapes(str(tmp_path / 'again'), **TINY_SET)
    truncated = tmp_path / 'again/val/000002.png'
    truncate(truncated)
    runner = Runner.from_cfg(
        _tiny_demo(tmp_path / 'again', tmp_path / 'work2'))
    with pytest.raises(UnreadableDataError) as error:
        runner.test()
    assert f'Cannot read {truncated}' in str(error.value)
    assert 'change the metric' in str(error.value)


def _classifier_with_bad_files(root: Path, *bad: str) -> Tuple[Path, list]:
    """The classifier run of train_runs with ``bad`` training images cut
    short, its validation on an intact copy (the loop validates at the end),
    and the ``--cfg-options`` that add the hook."""
    config = write_classifier_run(root)
    shutil.copytree(root / 'data', root / 'val_data')
    for name in bad:
        truncate(root / 'data' / name)
    options = [
        '--cfg-options',
        'default_hooks.unreadable_data.type=eva_mm.UnreadableDataHook',
        f'val_dataloader.dataset.data_root={root / "val_data"}',
        f'test_dataloader.dataset.data_root={root / "val_data"}'
    ]
    return config, options


@pytest.mark.slow
def test_two_ranks_gather_one_summary(tmp_path):
    config, options = _classifier_with_bad_files(tmp_path, 'dark/3.png',
                                                 'light/6.png')
    bad = {tmp_path / 'data/dark/3.png', tmp_path / 'data/light/6.png'}
    options += [
        # One worker per rank: the rebuilt loader, on each rank.
        'train_dataloader.num_workers=1', 'train_cfg.max_iters=4'
    ]
    # 16 images, 2 ranks x batch 4: 4 iterations draw every image twice.
    work_dir = tmp_path / 'dist'
    result = run_tool([
        'bash', str(ROOT / 'tools/dist_train.sh'), str(config), '2',
        '--work-dir', str(work_dir), *options
    ], PYTHON=sys.executable, PORT='29541')
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((work_dir / 'skipped_files.json').read_text())
    assert {f['path'] for f in summary['files']} == {str(p) for p in bad}
    # Both ranks' samples: 2 x 4 iterations x 4, and the skips.
    assert summary['samples_drawn'] == 32 + summary['num_skips']

    # Past the limit both ranks stop, each with the list of both ranks.
    stopped = run_tool([
        'bash', str(ROOT / 'tools/dist_train.sh'), str(config), '2',
        '--work-dir', str(tmp_path / 'stopped'), *options,
        'default_hooks.unreadable_data.max_files=1'
    ], PYTHON=sys.executable, PORT='29542')
    assert stopped.returncode != 0
    for rank in (0, 1):
        error = re.search(
            rf'\[rank{rank}\]: \S*UnreadableDataError: Training stops: 2 '
            r'unreadable training files.*?\n((?:\[rank\d\]:   .*\n)+)',
            stopped.stderr)
        assert error, stopped.stderr[-3000:]
        assert set(re.findall(r'(/\S+\.png): ', error.group(1))) == {
            str(p) for p in bad}


@pytest.mark.slow
def test_resumed_run_counts_on_and_a_new_one_from_zero(tmp_path):
    config, options = _classifier_with_bad_files(tmp_path, 'dark/3.png')
    work_dir = tmp_path / 'work'

    def summary(path: Path) -> dict:
        return json.loads((path / 'skipped_files.json').read_text())

    # 16 images, batch 4: each 4 iterations are one epoch.
    first = run_tool(
        train_cmd(config, work_dir, *options,
                  'train_cfg.max_iters=4'))
    assert first.returncode == 0, first.stderr[-3000:]
    before = summary(work_dir)
    assert before['num_skips'] >= 1
    assert before['samples_drawn'] == 16 + before['num_skips']
    resumed = run_tool(
        train_cmd(config, work_dir, '--resume', *options,
                  'train_cfg.max_iters=8'))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = summary(work_dir)
    assert after['num_skips'] > before['num_skips']
    assert after['samples_drawn'] == 32 + after['num_skips']
    # Weights loaded to start another run: its counts start at zero.
    fresh = run_tool(
        train_cmd(config, tmp_path / 'fresh', *options,
                  'train_cfg.max_iters=4',
                  f'load_from={work_dir / "iter_4.pth"}'))
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert summary(tmp_path / 'fresh')['samples_drawn'] == 16 + summary(
        tmp_path / 'fresh')['num_skips']
