"""tools/analysis/check_dataset.py finds every fault planted in a generated
set (an image cut short, a missing one, one redrawn at another size, one
left without annotations, a label map of another size, a corrupt video) and
passes the clean set."""
import json
import os
import sys
from pathlib import Path

import cv2
import pytest
from mmengine.config import Config
from train_runs import run_tool

from eva_mm.datasets.synthetic import generate_demo_ade, generate_demo_shapes

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / 'tools/analysis'))
import check_dataset  # noqa: E402

from test_video.moving_shapes import CORRUPT, generate  # noqa: E402

DEMO = ROOT / 'configs/demo/eva-demo-p8_cascade-mask-rcnn_shapes.py'
SEG_DEMO = (ROOT / 'configs/segmentation/demo/'
            'eva-demo-p8_vit-adapter_mask2former_ade-shapes.py')
VIDEO_DEMO = ROOT / 'configs/video/demo/eva-tiny-p8_moving-shapes_8x32.py'
PLANTED = {
    ('unreadable', '000001.png'),
    ('missing', '000003.png'),
    ('size', '000004.png'),
    ('empty', '000006.png'),
}


def remove_annotations(root: Path, name: str) -> None:
    """Leave val image ``name`` of a demo shapes set without instances."""
    ann_file = root / 'annotations/instances_val.json'
    coco = json.loads(ann_file.read_text())
    image_id = next(image['id'] for image in coco['images']
                    if image['file_name'] == name)
    coco['annotations'] = [
        ann for ann in coco['annotations'] if ann['image_id'] != image_id
    ]
    ann_file.write_text(json.dumps(coco))


def plant(root: Path) -> None:
    """The faults of ``PLANTED`` in the val split of a demo shapes set."""
    remove_annotations(root, '000006.png')
    val = root / 'val'
    data = (val / '000001.png').read_bytes()
    (val / '000001.png').write_bytes(data[:len(data) // 2])
    os.remove(val / '000003.png')
    image = cv2.imread(str(val / '000004.png'))
    cv2.imwrite(str(val / '000004.png'), cv2.resize(image, (48, 64)))


def _faults(config: Path, split: str, **options) -> set:
    cfg = Config.fromfile(str(config))
    cfg.merge_from_dict(options)
    samples = check_dataset.build_samples(cfg, split)
    return {(fault['kind'], Path(fault['path']).name)
            for fault in check_dataset.check(samples, workers=2)}


@pytest.mark.registry_scope('mmdet')
def test_every_planted_detection_fault_is_found(tmp_path):
    generate_demo_shapes(str(tmp_path), num_train=4, num_val=8, img_size=64)
    root = {'val_dataloader.dataset.data_root': str(tmp_path)}
    assert _faults(DEMO, 'val', **root) == set()
    plant(tmp_path)
    assert _faults(DEMO, 'val', **root) == PLANTED


@pytest.mark.registry_scope('mmseg')
def test_label_map_of_another_size_is_found(tmp_path):
    generate_demo_ade(str(tmp_path), num_train=3, num_val=2, img_size=32)
    root = {'train_dataloader.dataset.data_root': str(tmp_path)}
    assert _faults(SEG_DEMO, 'train', **root) == set()
    label_map = tmp_path / 'annotations/training/000002.png'
    labels = cv2.imread(str(label_map), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(label_map), labels[:, :24])
    assert _faults(SEG_DEMO, 'train', **root) == {('label_size',
                                                   '000002.png')}


@pytest.mark.registry_scope('mmaction')
def test_corrupt_video_is_found(tmp_path):
    generate(tmp_path, train_per_class=1, val_per_class=1)
    assert _faults(
        VIDEO_DEMO, 'train', **{
            'train_dataloader.dataset.ann_file': str(
                tmp_path / 'train_list.txt'),
            'train_dataloader.dataset.data_prefix.video': str(
                tmp_path / 'videos'),
        }) == {('unreadable', CORRUPT)}


@pytest.mark.slow
def test_command_line_exit_status_and_report(tmp_path):
    generate_demo_shapes(str(tmp_path), num_train=4, num_val=8, img_size=64)
    command = [
        sys.executable,
        str(ROOT / 'tools/analysis/check_dataset.py'),
        str(DEMO), '--split', 'val', '--workers', '2', '--out',
        str(tmp_path / 'report.json'), '--cfg-options',
        f'val_dataloader.dataset.data_root={tmp_path}'
    ]
    clean = run_tool(command)
    assert clean.returncode == 0, clean.stderr[-3000:]
    assert json.loads((tmp_path / 'report.json').read_text())['faults'] == []
    # An image without instances fails the check unless allowed.
    remove_annotations(tmp_path, '000006.png')
    assert run_tool(command).returncode == 1
    assert run_tool(command + ['--allow-empty']).returncode == 0
    plant(tmp_path)
    faulty = run_tool(command)
    assert faulty.returncode == 1, faulty.stderr[-3000:]
    report = json.loads((tmp_path / 'report.json').read_text())
    assert {(f['kind'], Path(f['path']).name)
            for f in report['faults']} == PLANTED
    assert report['counts'] == dict(
        missing=1, unreadable=1, size=1, label_size=0, empty=1)
    assert 'decoded 48 x 64, annotated 64 x 64' in faulty.stdout
