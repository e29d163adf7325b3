"""EVA ViT-Adapter + Mask2Former semantic segmentation end to end on CPU.

The generated ADE20K-format set, the tiny demo config trained a few
iterations through tools/train.py, evaluated through tools/test.py by
sliding windows (checked against an mIoU computed here from in-process
predictions) and with --tta (multi-scale + flip), the overlay of
tools/image_demo.py, sliding-window logits checked window by window, and
mmseg's own Mask2Former config with the EVA backbone swapped in.
"""
import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Dict, List

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.hub import get_config
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from test_integration.test_stock_configs import (_build,
                                                 _step_changes_backbone)
from train_runs import ROOT, read_losses, train_cmd

import eva_mm  # noqa: F401  (registers eva_mm.* for the configs)
from eva_mm.apis import inference, init_model
from eva_mm.datasets.synthetic import generate_demo_ade

CONFIG = ROOT / ('configs/segmentation/demo/'
                 'eva-demo-p8_vit-adapter_mask2former_ade-shapes.py')
ITERS = 30
NUM_VAL = 4


pytestmark = [pytest.mark.registry_scope('mmseg'), pytest.mark.slow]


@pytest.fixture(scope='module')
def ade_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp('seg') / 'demo_ade'
    generate_demo_ade(str(root), num_train=16, num_val=NUM_VAL,
                      num_classes=8)
    return root


def data_options(root: Path) -> List[str]:
    return [
        f'{loader}.dataset.data_root={root}'
        for loader in ('train_dataloader', 'val_dataloader',
                       'test_dataloader')
    ]


def run(cmd: List[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope='module')
def trained(ade_set: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo config trained ``ITERS`` iterations by tools/train.py."""
    work_dir = tmp_path_factory.mktemp('seg_train')
    run(train_cmd(
        CONFIG, work_dir, '--cfg-options', f'train_cfg.max_iters={ITERS}',
        f'train_cfg.val_interval={ITERS}', f'param_scheduler.1.end={ITERS}',
        f'default_hooks.checkpoint.interval={ITERS}',
        *data_options(ade_set)))
    return work_dir


def test_generated_set_is_deterministic_and_ade_format(
        ade_set: Path, tmp_path: Path) -> None:
    again = tmp_path / 'again'
    generate_demo_ade(str(again), num_train=16, num_val=NUM_VAL,
                      num_classes=8)
    for rel in ('images/training/000003.jpg',
                'annotations/validation/000001.png'):
        assert hashlib.md5((ade_set / rel).read_bytes()).digest() == \
            hashlib.md5((again / rel).read_bytes()).digest()
    # A second call finds the set and leaves it untouched.
    stamp = (again / 'images/training/000000.jpg').stat().st_mtime_ns
    generate_demo_ade(str(again), num_train=16, num_val=NUM_VAL,
                      num_classes=8)
    assert (again / 'images/training/000000.jpg').stat().st_mtime_ns == stamp

    init_default_scope('mmseg')
    from mmseg.datasets import ADE20KDataset
    dataset = ADE20KDataset(
        data_root=str(ade_set),
        data_prefix=dict(img_path='images/training',
                         seg_map_path='annotations/training'),
        pipeline=[dict(type='LoadAnnotations')])
    assert len(dataset) == 16 and len(dataset.metainfo['classes']) == 150
    labels = set()
    for index in range(len(dataset)):
        raw = cv2.imread(dataset[index]['seg_map_path'], cv2.IMREAD_UNCHANGED)
        seg = dataset[index]['gt_seg_map']
        # reduce_zero_label: 0 ("other") -> 255, class k -> k - 1.
        np.testing.assert_array_equal(seg[raw == 0], 255)
        np.testing.assert_array_equal(seg[raw > 0], raw[raw > 0] - 1)
        labels |= set(np.unique(raw).tolist())
    assert labels <= set(range(9)) and len(labels) > 4
    with pytest.raises(ValueError, match='num_classes must be in 1..150'):
        generate_demo_ade(str(tmp_path / 'bad'), num_classes=151)


def test_training_lowers_the_loss(trained: Path) -> None:
    losses = read_losses(trained)
    first, last = min(losses), max(losses)
    assert last == ITERS and first <= 10
    assert losses[last] < 0.8 * losses[first], losses


def logged_metrics(proc_dir: Path) -> Dict[str, float]:
    """The metrics tools/test.py logged in ``proc_dir``."""
    logs = sorted(proc_dir.glob('*/*.json'))
    assert logs, f'no metrics under {proc_dir}'
    return json.loads(logs[-1].read_text())


def iou_reference(model: torch.nn.Module, root: Path) -> float:
    """mIoU of in-process predictions, counted here with NumPy as mmseg's
    IoUMetric defines it: per class over the whole set, labels shifted by
    reduce_zero_label, classes absent from both prediction and truth left
    out."""
    intersect = np.zeros(150)
    union = np.zeros(150)
    for image in sorted((root / 'images/validation').glob('*.jpg')):
        pred = inference(model, str(image)).pred_sem_seg.data[0].numpy()
        raw = cv2.imread(
            str(root / 'annotations/validation' / f'{image.stem}.png'),
            cv2.IMREAD_UNCHANGED).astype(np.int64)
        valid = raw > 0
        gt, pred = raw[valid] - 1, pred[valid]
        intersect += np.bincount(gt[gt == pred], minlength=150)
        union += np.bincount(gt, minlength=150) + np.bincount(
            pred, minlength=150) - np.bincount(gt[gt == pred], minlength=150)
    present = union > 0
    return float(np.mean(intersect[present] / union[present]) * 100)


def test_slide_evaluation_matches_reference(trained: Path, ade_set: Path,
                                            tmp_path: Path) -> None:
    checkpoint = trained / f'iter_{ITERS}.pth'
    run([sys.executable, str(ROOT / 'tools/test.py'), str(CONFIG),
         str(checkpoint), '--work-dir', str(tmp_path), '--cfg-options',
         *data_options(ade_set)])
    metrics = logged_metrics(tmp_path)
    model = init_model(str(CONFIG), str(checkpoint))
    # IoUMetric reports percentages rounded to 2 decimals.
    assert metrics['mIoU'] == pytest.approx(
        iou_reference(model, ade_set), abs=0.006)


def test_tta_evaluation(trained: Path, ade_set: Path,
                        tmp_path: Path) -> None:
    proc = run([
        sys.executable, str(ROOT / 'tools/test.py'), str(CONFIG),
        str(trained / f'iter_{ITERS}.pth'), '--tta', '--work-dir',
        str(tmp_path), '--cfg-options', *data_options(ade_set)
    ])
    metrics = logged_metrics(tmp_path)
    assert 0 <= metrics['mIoU'] <= 100
    assert f'[{NUM_VAL}/{NUM_VAL}]' in proc.stdout + proc.stderr


def load_test_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location('eva_test_tool',
                                                  ROOT / 'tools/test.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tta_needs_pipeline_and_model() -> None:
    tool = load_test_tool()
    cfg = Config.fromfile(str(CONFIG))
    tool.enable_tta(cfg)
    # The TTA wrapper holds the segmentor and the data go through the
    # TestTimeAug pipeline.
    assert cfg.model.type == 'eva_mm.PadShortSideSegTTAModel'
    assert cfg.model.module.type == 'eva_mm.Mask2FormerEncoderDecoder'
    assert cfg.test_dataloader.dataset.pipeline[1].type == 'TestTimeAug'
    bare = Config(dict(model=dict(type='EncoderDecoder'),
                       tta_model=dict(type='SegTTAModel')))
    with pytest.raises(ValueError, match='--tta needs tta_pipeline'):
        tool.enable_tta(bare)


def test_image_demo_draws_overlay_with_legend(trained: Path, ade_set: Path,
                                              tmp_path: Path) -> None:
    image = ade_set / 'images/validation/000000.jpg'
    checkpoint = trained / f'iter_{ITERS}.pth'
    run([sys.executable, str(ROOT / 'tools/image_demo.py'), str(image),
         str(CONFIG), str(checkpoint), '--out-dir', str(tmp_path)])
    picture = cv2.imread(str(tmp_path / 'vis/000000.png'))
    source = cv2.imread(str(image))
    # The overlay keeps the image size; the legend widens the picture.
    assert picture.shape[0] >= source.shape[0]
    assert picture.shape[1] > source.shape[1]
    assert not np.array_equal(picture[:96, :96], source)
    labels = cv2.imread(str(tmp_path / 'preds/000000_label.png'),
                        cv2.IMREAD_UNCHANGED)
    model = init_model(str(CONFIG), str(checkpoint))
    expected = inference(model, str(image)).pred_sem_seg.data[0].numpy()
    np.testing.assert_array_equal(labels, expected)
    counts = json.loads((tmp_path / 'preds/000000.json').read_text())
    assert sum(counts['pixel_counts'].values()) == 96 * 96


def test_slide_inference_averages_window_logits() -> None:
    """Mask2FormerEncoderDecoder's slide logits equal the hand-pasted
    average of the head's logits on each window, also when the meta has
    the whole image's pad_shape (as ResizeToMultiple sets it). With
    mmseg's semantic map (the head's predict), which the reference uses;
    EVA's 1/4-resolution map is tested in test_eva_seg_forward.py."""
    torch.manual_seed(0)
    model = init_model(
        str(CONFIG),
        cfg_options={'model.semantic_at_mask_resolution': False})
    image = torch.randn(1, 3, 96, 96)
    metas = [dict(img_shape=(96, 96), ori_shape=(96, 96),
                  pad_shape=(96, 96))]
    with torch.no_grad():
        logits = model.slide_inference(image, metas)
        expected = torch.zeros_like(logits)
        count = torch.zeros(1, 1, 96, 96)
        for y in (0, 32):
            for x in (0, 32):
                window = image[:, :, y:y + 64, x:x + 64]
                window_logits = model.decode_head.predict(
                    model.extract_feat(window),
                    [dict(img_shape=(64, 64), pad_shape=(64, 64))],
                    model.test_cfg)
                expected += F.pad(window_logits, (x, 32 - x, y, 32 - y))
                count[:, :, y:y + 64, x:x + 64] += 1
    assert logits.shape == (1, 150, 96, 96)
    torch.testing.assert_close(logits, expected / count)


def test_stock_mmseg_mask2former_config_trains() -> None:
    """mmseg's Mask2Former config with only custom_imports, the backbone
    and the head's input widths (one per backbone level) changed."""
    from mmseg.structures import SegDataSample
    cfg = get_config('mmseg::mask2former/'
                     'mask2former_r50_8xb2-160k_ade20k-512x512.py')
    # The stock config imports mmdet.models for its pixel decoder.
    cfg.custom_imports = dict(imports=['mmdet.models', 'eva_mm'],
                              allow_failed_imports=False)
    cfg.model.backbone = dict(
        type='eva_mm.EVAViTAdapter',
        arch='tiny',
        img_size=64,
        patch_size=8,
        deform_num_heads=4,
        conv_inplane=16,
        # Outside a runner nothing turns SyncBN into BN.
        norm_cfg=dict(type='BN'))
    cfg.model.decode_head.in_channels = [192] * 4
    cfg.model.data_preprocessor.size = (64, 64)
    model = _build(cfg, 'mmseg')
    samples = []
    for i in range(2):
        sample = SegDataSample(metainfo=dict(
            img_shape=(64, 64), ori_shape=(64, 64), pad_shape=(64, 64)))
        # Four quadrants of four classes.
        seg = torch.zeros(1, 64, 64, dtype=torch.long)
        seg[:, :32, 32:], seg[:, 32:, :32], seg[:, 32:, 32:] = 1 + i, 7, 42
        sample.gt_sem_seg = PixelData(data=seg)
        samples.append(sample)
    generator = torch.Generator().manual_seed(0)
    data = dict(
        inputs=[torch.randint(0, 255, (3, 64, 64), generator=generator)
                .float() for _ in range(2)],
        data_samples=samples)
    losses = _step_changes_backbone(model, data)
    assert {'decode.loss_cls', 'decode.loss_mask', 'decode.loss_dice'} <= set(
        losses)
