"""Video recognition end to end on generated clips of moving shapes.

Decoding with decord and the OpenCV fallback, a corrupt video skipped in
training and named in evaluation, a few training iterations of the demo
config and its 4 x 3-view test, whose top-1/top-5 are checked against a
hand-rolled evaluation.
"""
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from mmaction.datasets import VideoDataset
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

from eva_mm.datasets import UnreadableDataError, VideoInit, VideoReadError
from eva_mm.datasets.unreadable import (check_header, guard_pipelines,
                                        pop_skipped)
from eva_mm.datasets.video_decoding import OpenCVReader, VideoDecode
from .moving_shapes import CLASSES, CORRUPT, NARROW, generate

ROOT = Path(__file__).parents[2]
DEMO = ROOT / 'configs/video/demo/eva-tiny-p8_moving-shapes_8x32.py'


@pytest.fixture(scope='module')
def shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('moving_shapes')
    generate(root, train_per_class=4, val_per_class=2)
    return root


pytestmark = pytest.mark.registry_scope('mmaction')


def _cv2_frames(path: Path) -> np.ndarray:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    return np.stack(frames)


@pytest.mark.parametrize('name', ['val_circle_left_0.mp4', NARROW])
def test_decode_matches_opencv(shapes, name):
    path = shapes / 'videos' / name
    expected = _cv2_frames(path)
    results = VideoInit().transform(dict(filename=str(path)))
    assert results['total_frames'] == len(expected) == 16
    results['frame_inds'] = np.array([0, 5, 15])
    results = VideoDecode().transform(results)
    assert 'video_reader' not in results
    got = np.stack(results['imgs']).astype(np.float32)
    # decord and OpenCV may use different FFmpeg builds: near, not equal.
    assert np.abs(got - expected[[0, 5, 15]]).mean() < 2.0


def test_narrow_video_needs_the_fallback(shapes):
    # decord 0.6 opens this 48-px-wide clip but cannot decode it; the check
    # documents why the fallback exists.
    import decord
    reader = decord.VideoReader(str(shapes / 'videos' / NARROW))
    with pytest.raises(Exception, match='size must exactly match'):
        reader.get_batch([0])
    frames = OpenCVReader(str(shapes / 'videos' / NARROW)).get_batch([0])
    assert frames.shape == (1, 48, 48, 3)


def test_corrupt_video_is_skipped_in_training_and_named_in_evaluation(
        shapes):
    init_default_scope('mmaction')  # the pipeline's UniformSample
    kwargs = dict(
        ann_file=str(shapes / 'train_list.txt'),
        data_prefix=dict(video=str(shapes / 'videos')),
        pipeline=[
            dict(type='eva_mm.VideoInit'),
            dict(type='UniformSample', clip_len=4),
            dict(type='eva_mm.VideoDecode'),
            dict(type='FormatShape', input_format='NCTHW'),
            dict(type='PackActionInputs'),
        ])
    corrupt = str(shapes / 'videos' / CORRUPT)
    with pytest.raises(VideoReadError, match='cannot open'):
        VideoInit().transform(dict(filename=corrupt))
    # Evaluation: the header check of eva_mm.UnreadableDataHook names it
    # before any clip is decoded, and so does the pipeline.
    assert 'cannot open' in check_header(corrupt)
    test = VideoDataset(test_mode=True, **kwargs)
    index = next(i for i in range(len(test))
                 if test.get_data_info(i)['filename'] == corrupt)
    guard_pipelines(test, skip=False)
    with pytest.raises(UnreadableDataError, match=re.escape(corrupt)):
        test[index]
    # Training: another video in its place, the corrupt one handed on with
    # it to the hook.
    train = VideoDataset(**kwargs)
    guard_pipelines(train, skip=True)
    sample = train[index]
    assert sample['inputs'].shape[:3] == (1, 3, 4)
    samples, skipped = pop_skipped(
        dict(inputs=[sample['inputs']], data_samples=[sample['data_samples']]))
    assert samples == 1
    assert [entry['path'] for entry in skipped] == [corrupt]
    assert 'VideoInit' in skipped[0]['reason']


@pytest.mark.slow
def test_train_and_4x3_view_test(shapes, tmp_path):
    cfg = Config.fromfile(str(DEMO))
    for loader in (cfg.train_dataloader, cfg.test_dataloader):
        split = 'train' if loader is cfg.train_dataloader else 'val'
        loader.dataset.ann_file = str(shapes / f'{split}_list.txt')
        loader.dataset.data_prefix = dict(video=str(shapes / 'videos'))
    cfg.val_dataloader = cfg.test_dataloader
    cfg.train_cfg = dict(by_epoch=False, max_iters=4, val_interval=100)
    cfg.param_scheduler = []
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=100)
    cfg.work_dir = str(tmp_path)
    runner = Runner.from_cfg(cfg)
    before = runner.model.backbone.blocks[0].attn.qkv.weight.detach().clone()
    runner.train()
    assert not torch.equal(before,
                           runner.model.backbone.blocks[0].attn.qkv.weight)
    metrics = runner.test()

    # The same evaluation by hand: 12 views per video, softmax averaged.
    model = runner.model.eval()
    dataset = runner.test_dataloader.dataset
    assert len(dataset) == len(CLASSES) * 2 + 1  # and the narrow clip
    scores, labels = [], []
    with torch.no_grad():
        for i in range(len(dataset)):
            sample = dataset[i]
            views = sample['inputs']
            assert views.shape == (12, 3, 8, 32, 32)
            batch = model.data_preprocessor(
                dict(inputs=[views], data_samples=[sample['data_samples']]))
            clips = batch['inputs'][0]
            logits = model.cls_head(model.backbone(clips))
            scores.append(logits.softmax(dim=1).mean(dim=0))
            labels.append(int(sample['data_samples'].gt_label))
    scores, labels = torch.stack(scores), torch.tensor(labels)
    top5 = scores.topk(5, dim=1).indices
    top1 = (top5[:, 0] == labels).float().mean().item()
    top5 = (top5 == labels[:, None]).any(dim=1).float().mean().item()
    assert metrics['acc/top1'] == pytest.approx(top1, abs=1e-6)
    assert metrics['acc/top5'] == pytest.approx(top5, abs=1e-6)
