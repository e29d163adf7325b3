"""K-722 -> K-400 head mapping by class name
(tools/model_converters/kinetics_head_mapping.py)."""
import importlib.util
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope, init_default_scope
from mmengine.runner import load_checkpoint

ROOT = Path(__file__).parents[2]
spec = importlib.util.spec_from_file_location(
    'kinetics_head_mapping',
    ROOT / 'tools/model_converters/kinetics_head_mapping.py')
head_mapping = importlib.util.module_from_spec(spec)
spec.loader.exec_module(head_mapping)

# A stand-in for the 722 K-722 classes: a superset in another order, in the
# official CSV format.
SOURCE = [
    'abseiling', 'air drumming', 'answering questions', 'applauding',
    'applying cream', 'archery', 'arm wrestling', 'arranging flowers',
    'assembling computer', 'auctioning'
]
# The target list spells names differently (case, underscores, spaces).
TARGET = ['Archery', 'abseiling', 'arm_wrestling', ' applauding ']


@pytest.fixture(autouse=True)
def _reset_scope():
    yield
    DefaultScope._instance_dict.clear()


def _recognizer(num_classes: int) -> torch.nn.Module:
    import eva_mm  # noqa: F401  (registers the eva_mm scope)
    cfg = Config.fromfile(
        str(ROOT / 'configs/video/demo/eva-tiny-p8_moving-shapes_8x32.py'))
    cfg.model.cls_head.num_classes = num_classes
    init_default_scope('mmaction')
    from mmaction.registry import MODELS
    return MODELS.build(cfg.model).eval()


def test_k722_head_maps_to_k400_by_name(tmp_path):
    source_csv = tmp_path / 'k722_labels.csv'
    source_csv.write_text('id,name\n' + ''.join(
        f'{i},{name}\n' for i, name in enumerate(SOURCE)))
    target_txt = tmp_path / 'k400_labels.txt'
    target_txt.write_text('\n'.join(TARGET) + '\n')

    torch.manual_seed(0)
    source_model = _recognizer(len(SOURCE))
    src = tmp_path / 'k722.pth'
    torch.save(dict(state_dict=source_model.state_dict()), src)
    dst = tmp_path / 'k400.pth'
    head_mapping.main([
        str(src), str(dst), '--source-labels', str(source_csv),
        '--target-labels', str(target_txt)
    ])

    # The source index of each target class, found by hand.
    expected_rows = [5, 0, 6, 3]
    assert [SOURCE[i] for i in expected_rows] == [
        'archery', 'abseiling', 'arm wrestling', 'applauding'
    ]
    target_model = _recognizer(len(TARGET))
    load_checkpoint(target_model, str(dst), strict=True)
    clip = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        source_logits = source_model.cls_head(source_model.backbone(clip))
        target_logits = target_model.cls_head(target_model.backbone(clip))
    torch.testing.assert_close(target_logits,
                               source_logits[:, expected_rows])


def test_missing_target_class_is_named():
    with pytest.raises(ValueError, match="'zumba'"):
        head_mapping.class_mapping(SOURCE, ['archery', 'zumba'])
    with pytest.raises(ValueError, match='twice'):
        head_mapping.class_mapping(['a', 'A'], ['a'])
