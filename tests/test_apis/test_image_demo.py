"""tools/image_demo.py and eva_mm.apis on randomly initialised models.

Nothing is trained: the checks are that the tool writes well-formed
pictures and JSON that agree with in-process inference, and that it handles
bad input, for a Cascade Mask R-CNN (mmdet) and an FCN segmentor (mmseg).
"""
import glob
import importlib.util
import json
import os.path as osp
import shutil
import subprocess
import sys
from types import ModuleType
from typing import Dict, List

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from pycocotools import mask as mask_utils

import eva_mm  # noqa: F401  (registers eva_mm.* in the mmengine registries)
from eva_mm.apis import (class_names, draw_result, inference, init_model,
                         result_to_json, task_scope)
from eva_mm.datasets.synthetic import (DEMO_SHAPES_CLASSES,
                                       DEMO_SHAPES_PALETTE,
                                       generate_demo_shapes)

# Runs tools or trains in subprocesses: left out of `pytest -m 'not slow'`.
pytestmark = pytest.mark.slow

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(ROOT, 'tools', 'image_demo.py')
RUN_DEMO = osp.join(ROOT, 'tools', 'demo', 'run_demo.py')
DET_CONFIG = osp.join(ROOT, 'configs', 'demo',
                      'eva-demo-p8_cascade-mask-rcnn_shapes.py')
# A tiny EVAViT under mmseg's EncoderDecoder and FCNHead, 150 classes as on
# ADE20K.
SEG_CONFIG = """
default_scope = 'mmseg'
custom_imports = dict(imports=['eva_mm'], allow_failed_imports=False)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(
        type='SegDataPreProcessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        size_divisor=16),
    backbone=dict(
        type='eva_mm.EVAViT',
        arch='tiny',
        img_size=64,
        patch_size=16,
        out_type='featmap',
        with_cls_token=False),
    decode_head=dict(
        type='FCNHead',
        in_channels=192,
        channels=32,
        num_convs=1,
        concat_input=False,
        num_classes=150,
        loss_decode=dict(type='CrossEntropyLoss')),
    test_cfg=dict(mode='whole'))
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='PackSegInputs')
]
"""


def run_image_demo(*args: str) -> subprocess.CompletedProcess:
    """tools/image_demo.py with ``args``, on CPU, capturing its output."""
    return subprocess.run([sys.executable, TOOL, *args, '--device', 'cpu'],
                          cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def save_checkpoint(model: torch.nn.Module, meta: Dict[str, object],
                    path: str) -> None:
    torch.save({'state_dict': model.state_dict(),
                'meta': {'dataset_meta': meta}}, path)


@pytest.fixture(scope='module')
def images(tmp_path_factory: pytest.TempPathFactory) -> List[str]:
    """Two 64 px shapes images, copied into a folder of their own."""
    root = tmp_path_factory.mktemp('shapes')
    generate_demo_shapes(str(root / 'set'), num_train=2, num_val=1,
                         img_size=64, seed=1)
    folder = root / 'images'
    folder.mkdir()
    paths = []
    for i, src in enumerate(sorted(glob.glob(str(root / 'set/train/*.png')))):
        paths.append(str(folder / f'shapes{i}.png'))
        shutil.copy(src, paths[-1])
    return paths


@pytest.fixture(scope='module')
def det_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    torch.manual_seed(0)
    model = init_model(DET_CONFIG)
    path = str(tmp_path_factory.mktemp('det') / 'random.pth')
    save_checkpoint(
        model,
        dict(classes=DEMO_SHAPES_CLASSES, palette=DEMO_SHAPES_PALETTE), path)
    return path


def test_detection_folder(images: List[str], det_checkpoint: str,
                          tmp_path) -> None:
    folder = osp.dirname(images[0])
    corrupt = osp.join(folder, 'corrupt.png')
    with open(corrupt, 'wb') as f:
        f.write(b'not a png')
    out_dir = str(tmp_path / 'out')
    # Threshold 0: a random head scores every class near 1/5.
    proc = run_image_demo(folder, DET_CONFIG, det_checkpoint, '--out-dir',
                          out_dir, '--score-thr', '0')
    assert proc.returncode == 0, proc.stderr
    assert 'corrupt.png' in proc.stderr
    assert not osp.exists(osp.join(out_dir, 'preds', 'corrupt.json'))

    model = init_model(DET_CONFIG, det_checkpoint)
    assert class_names(model) == DEMO_SHAPES_CLASSES
    for path in images:
        stem = osp.splitext(osp.basename(path))[0]
        picture = cv2.imread(osp.join(out_dir, 'vis', stem + '.png'))
        height, width = cv2.imread(path).shape[:2]
        assert picture.shape[:2] == (height, width)
        with open(osp.join(out_dir, 'preds', stem + '.json')) as f:
            instances = json.load(f)['instances']
        assert instances
        result = inference(model, path)
        pred = result.pred_instances
        assert len(instances) == len(pred)
        np.testing.assert_allclose([i['bbox'] for i in instances],
                                   pred.bboxes.numpy(), atol=1e-2)
        np.testing.assert_allclose([i['score'] for i in instances],
                                   pred.scores.numpy(), atol=1e-4)
        for instance, label, mask in zip(instances, pred.labels.tolist(),
                                         pred.masks.numpy()):
            assert instance['label'] == label
            assert instance['class_name'] == DEMO_SHAPES_CLASSES[label]
            x1, y1, x2, y2 = instance['bbox']
            assert 0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height
            rle = dict(instance['mask'], counts=instance['mask']['counts']
                       .encode('ascii'))
            assert (mask_utils.decode(rle) == mask).all()

    # An image without detections still draws, at the requested zoom.
    result.pred_instances = pred[pred.scores > 1]
    assert draw_result(model, images[0], result, zoom=2).shape == (128, 128, 3)
    assert result_to_json(result, DEMO_SHAPES_CLASSES) == dict(instances=[])


def test_inference_matches_task_functions(images: List[str],
                                          det_checkpoint: str) -> None:
    """The inferencers predict what mmdet's ``inference_detector`` does with
    the test pipeline minus ``LoadAnnotations``, from paths or arrays."""
    from mmcv.transforms import Compose
    from mmdet.apis import inference_detector
    from mmdet.utils import get_test_pipeline_cfg
    model = init_model(DET_CONFIG, det_checkpoint)
    steps = get_test_pipeline_cfg(model.cfg)
    assert any(step['type'] == 'LoadAnnotations' for step in steps)
    expected = inference_detector(
        model, images, test_pipeline=Compose(
            [step for step in steps if step['type'] != 'LoadAnnotations']))
    by_path = inference(model, images)
    by_array = [inference(model, cv2.imread(path)) for path in images]
    assert isinstance(by_path, list) and len(by_path) == len(images)
    for want, *got in zip(expected, by_path, by_array):
        for result in got:
            for key in ('bboxes', 'scores', 'labels', 'masks'):
                assert torch.equal(result.pred_instances[key],
                                   want.pred_instances[key]), key


def load_tool(path: str) -> ModuleType:
    """A tools/ script as a module, for calling its functions in process."""
    spec = importlib.util.spec_from_file_location(
        osp.splitext(osp.basename(path))[0], path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def run_image_demo_in_process(monkeypatch: pytest.MonkeyPatch,
                              *args: str) -> str:
    """The error message that tools/image_demo.py exits with.

    In process, to spare the seconds a fresh interpreter spends importing
    mmdet for each bad input.
    """
    tool = load_tool(TOOL)
    monkeypatch.setattr(sys, 'argv', [TOOL, *args, '--device', 'cpu'])
    with pytest.raises(SystemExit) as exit_info:
        tool.main()
    return str(exit_info.value.code)


def test_demo_gallery(images: List[str], det_checkpoint: str,
                      tmp_path) -> None:
    # run_demo.py draws its gallery through eva_mm.apis, enlarged.
    out_file = str(tmp_path / 'gallery.png')
    load_tool(RUN_DEMO).draw_gallery(
        DET_CONFIG, det_checkpoint, images, out_file, {}, zoom=2, columns=2,
        score_thr=0)
    assert cv2.imread(out_file).shape == (2 * 64 + 6, 2 * (2 * 64 + 6), 3)


def test_bad_inputs(images: List[str], det_checkpoint: str, tmp_path,
                    monkeypatch: pytest.MonkeyPatch) -> None:
    out_dir = str(tmp_path / 'out')
    corrupt = str(tmp_path / 'broken.jpg')
    with open(corrupt, 'wb') as f:
        f.write(b'\xff\xd8 truncated')
    assert 'broken.jpg' in run_image_demo_in_process(
        monkeypatch, corrupt, DET_CONFIG, det_checkpoint, '--out-dir',
        out_dir)
    assert 'missing.png' in run_image_demo_in_process(
        monkeypatch, str(tmp_path / 'missing.png'), DET_CONFIG,
        det_checkpoint, '--out-dir', out_dir)
    assert 'missing.pth' in run_image_demo_in_process(
        monkeypatch, images[0], DET_CONFIG, str(tmp_path / 'missing.pth'),
        '--out-dir', out_dir)
    other = tmp_path / 'classifier.py'
    other.write_text("default_scope = 'mmpretrain'\n")
    assert 'mmpretrain' in run_image_demo_in_process(
        monkeypatch, images[0], str(other), det_checkpoint, '--out-dir',
        out_dir)
    with pytest.raises(ValueError, match='mmpretrain'):
        task_scope(str(other))


def test_segmentation_image(images: List[str], tmp_path) -> None:
    from mmseg.utils import get_classes, get_palette
    config = tmp_path / 'seg.py'
    config.write_text(SEG_CONFIG)
    assert task_scope(str(config)) == 'mmseg'
    torch.manual_seed(0)
    checkpoint = str(tmp_path / 'seg.pth')
    save_checkpoint(
        init_model(Config.fromfile(str(config))),
        dict(classes=get_classes('ade'), palette=get_palette('ade')),
        checkpoint)
    out_dir = str(tmp_path / 'out')
    proc = run_image_demo(images[0], str(config), checkpoint, '--out-dir',
                          out_dir)
    assert proc.returncode == 0, proc.stderr

    stem = osp.splitext(osp.basename(images[0]))[0]
    label = cv2.imread(
        osp.join(out_dir, 'preds', stem + '_label.png'), cv2.IMREAD_UNCHANGED)
    assert label.shape == cv2.imread(images[0]).shape[:2]
    model = init_model(str(config), checkpoint)
    result = inference(model, images[0])
    # The same logits as mmseg's own single-image function.
    from mmseg.apis import inference_model
    assert torch.equal(result.seg_logits.data,
                       inference_model(model, images[0]).seg_logits.data)
    expected = result.seg_logits.data.argmax(dim=0).numpy()
    assert (label == expected).all()
    with open(osp.join(out_dir, 'preds', stem + '.json')) as f:
        prediction = json.load(f)
    assert prediction['label_file'].endswith(stem + '_label.png')
    names = get_classes('ade')
    assert prediction['pixel_counts'] == {
        names[i]: int((expected == i).sum())
        for i in np.unique(expected)
    }
    picture = cv2.imread(osp.join(out_dir, 'vis', stem + '.png'))
    # The legend widens the picture, never heightens a 64 px one by much.
    assert picture.shape[1] > label.shape[1]
