"""Video recognition end to end on generated clips of moving shapes.

Decoding with decord and the OpenCV fallback, a corrupt video reported and
left out, a few training iterations of the demo config and its 4 x 3-view
test, whose top-1/top-5 are checked against a hand-rolled evaluation.
"""
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

from eva_mm.datasets import RobustVideoDataset, VideoInit, VideoReadError
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


def test_corrupt_video_is_reported_and_skipped(shapes, caplog):
    init_default_scope('mmaction')  # the pipeline's UniformSample
    kwargs = dict(
        ann_file=str(shapes / 'val_list.txt'),
        data_prefix=dict(video=str(shapes / 'videos')),
        pipeline=[
            dict(type='eva_mm.VideoInit'),
            dict(type='UniformSample', clip_len=4),
            dict(type='eva_mm.VideoDecode'),
        ])
    with pytest.raises(VideoReadError, match='cannot open'):
        VideoInit().transform(
            dict(filename=str(shapes / 'videos' / CORRUPT)))
    with caplog.at_level(logging.WARNING):
        dataset = RobustVideoDataset(test_mode=True, **kwargs)
    listed = (shapes / 'val_list.txt').read_text().split('\n')
    assert len(dataset) == len([line for line in listed if line]) - 1
    assert dataset.unreadable == [str(shapes / 'videos' / CORRUPT)]
    assert not any(CORRUPT in dataset.get_data_info(i)['filename']
                   for i in range(len(dataset)))
    # In training an unchecked list keeps the corrupt video; fetching it
    # logs the failure and returns another, readable video.
    train = RobustVideoDataset(**kwargs)
    corrupt = [i for i in range(len(train))
               if CORRUPT in train.get_data_info(i)['filename']]
    assert len(corrupt) == 1
    assert train.prepare_data(corrupt[0]) is None
    sample = train[corrupt[0]]
    assert CORRUPT not in sample['filename']
    assert len(sample['imgs']) == 4


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
    assert len(dataset) == len(CLASSES) * 2 + 1  # the corrupt one left out
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
