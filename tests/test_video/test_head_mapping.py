"""K-722 -> K-400 head mapping by class name or by the official .npy mask
(tools/model_converters/kinetics_head_mapping.py)."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
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


pytestmark = pytest.mark.registry_scope('mmaction')


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


# The official K-722 list names two K-400 classes as Kinetics-600 renamed
# them (EVA-01/video/labels/kinetics722_labels.csv ids 94 and 126); a
# stand-in in the same alphabetical order, with their neighbours.
K722_PART = [
    'changing oil', 'changing wheel (not on bike)', 'checking tires',
    'cooking on campfire', 'cooking sausages (not on barbeque)',
    'cooking scallops', 'zumba'
]
K400_PART = ['changing oil', 'changing wheel', 'cooking sausages', 'zumba']


def test_renamed_k400_classes_map_to_their_k722_rows():
    # By hand: rows 0, 1, 4, 6 of K722_PART.
    assert head_mapping.class_mapping(K722_PART, K400_PART) == [0, 1, 4, 6]
    # And the other way round (a K-400-named source, K-600 names).
    assert head_mapping.class_mapping(
        K400_PART, ['Changing wheel (not on bike)', 'zumba']) == [1, 3]
    # A source that lists both names keeps them apart.
    both = ['changing wheel', 'changing wheel (not on bike)']
    assert head_mapping.class_mapping(both, ['changing wheel']) == [0]


def _head_checkpoint(tmp_path, num_classes: int):
    weight = torch.arange(num_classes * 3, dtype=torch.float32).reshape(
        num_classes, 3)
    bias = torch.arange(num_classes, dtype=torch.float32) * 10
    other = torch.randn(4)
    src = tmp_path / 'k722.pth'
    torch.save(dict(state_dict={
        'cls_head.fc_cls.weight': weight,
        'cls_head.fc_cls.bias': bias,
        'backbone.cls_token': other,
    }), src)
    return src, weight, bias, other


@pytest.mark.parametrize('kind', ['bool', 'int'])
def test_official_npy_mapping_gives_the_rows_of_the_names(tmp_path, kind):
    src, weight, bias, other = _head_checkpoint(tmp_path, len(K722_PART))
    rows = [0, 1, 4, 6]
    if kind == 'bool':
        # The official files are masks: head[mask] keeps rows in order.
        mapping = np.zeros(len(K722_PART), dtype=bool)
        mapping[rows] = True
    else:
        mapping = np.array(rows, dtype=np.int64)
    npy = tmp_path / 'k722_to_k400_mapping.npy'
    np.save(npy, mapping)
    by_mask, by_name = tmp_path / 'mask.pth', tmp_path / 'name.pth'
    head_mapping.main([str(src), str(by_mask), '--mapping', str(npy)])
    labels = tmp_path / 'k722.txt', tmp_path / 'k400.txt'
    labels[0].write_text('\n'.join(K722_PART))
    labels[1].write_text('\n'.join(K400_PART))
    head_mapping.main([
        str(src), str(by_name), '--source-labels', str(labels[0]),
        '--target-labels', str(labels[1])
    ])
    mapped = torch.load(by_mask, weights_only=True)['state_dict']
    named = torch.load(by_name, weights_only=True)['state_dict']
    # Row r of the head holds 3r, 3r+1, 3r+2 and bias 10r.
    expected = torch.tensor([[3 * r, 3 * r + 1, 3 * r + 2] for r in rows],
                            dtype=torch.float32)
    torch.testing.assert_close(mapped['cls_head.fc_cls.weight'], expected)
    torch.testing.assert_close(mapped['cls_head.fc_cls.bias'],
                               torch.tensor([10. * r for r in rows]))
    torch.testing.assert_close(mapped['backbone.cls_token'], other)
    for key in mapped:
        torch.testing.assert_close(mapped[key], named[key])


def test_npy_mapping_that_does_not_fit_is_refused(tmp_path):
    src, *_ = _head_checkpoint(tmp_path, len(K722_PART))
    dst = tmp_path / 'out.pth'
    cases = [
        (np.ones(5, dtype=bool), 'a mask of 5 entries'),
        (np.array([0, 9]), r'rows \[9\] are outside'),
        (np.array([0.5, 1.0]), 'dtype float64'),
    ]
    for array, match in cases:
        npy = tmp_path / 'mapping.npy'
        np.save(npy, array)
        with pytest.raises(SystemExit, match=match):
            head_mapping.main([str(src), str(dst), '--mapping', str(npy)])
        assert not dst.exists()
    # A mask that selects another count than the target labels list.
    npy = tmp_path / 'mapping.npy'
    np.save(npy, np.array([True] * 3 + [False] * 4))
    labels = tmp_path / 'k400.txt'
    labels.write_text('\n'.join(K400_PART))
    with pytest.raises(SystemExit, match='selects 3 classes'):
        head_mapping.main([str(src), str(dst), '--mapping', str(npy),
                           '--target-labels', str(labels)])
    assert not dst.exists()
