"""No silent partial loads: tools/test.py, tools/image_demo.py and
eva_mm.apis.init_model refuse a checkpoint that leaves model weights
unloaded, naming them, unless a partial load is asked for explicitly.

The example of issue #12: a Cascade Mask R-CNN checkpoint without its last
stage, which mmengine's loader accepts with a warning and evaluates with a
random third stage.
"""
import os.path as osp
import subprocess
import sys
from typing import Dict

import pytest
import torch

import eva_mm  # noqa: F401  (registers eva_mm.* in the mmengine registries)
from eva_mm.apis import init_model
from eva_mm.datasets.synthetic import DEMO_SHAPES_CLASSES, DEMO_SHAPES_PALETTE
from eva_mm.checkpoints.errors import CheckpointMismatchError

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DET_CONFIG = osp.join(ROOT, 'configs', 'demo',
                      'eva-demo-p8_cascade-mask-rcnn_shapes.py')
LAST_STAGE = 'roi_head.bbox_head.2.'


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, str]:
    """A whole random Cascade checkpoint and one without stage 3."""
    torch.manual_seed(0)
    model = init_model(DET_CONFIG)
    state = model.state_dict()
    folder = tmp_path_factory.mktemp('partial')
    meta = {'dataset_meta': dict(classes=DEMO_SHAPES_CLASSES,
                                 palette=DEMO_SHAPES_PALETTE)}
    paths = dict(whole=str(folder / 'whole.pth'),
                 partial=str(folder / 'no_stage3.pth'))
    torch.save({'state_dict': state, 'meta': meta}, paths['whole'])
    torch.save({
        'state_dict': {
            k: v
            for k, v in state.items() if not k.startswith(LAST_STAGE)
        },
        'meta': meta
    }, paths['partial'])
    paths['stage3'] = sorted(k for k in state if k.startswith(LAST_STAGE))
    return paths


def test_init_model_refuses_and_names_missing_keys(
        checkpoints: Dict[str, str]) -> None:
    with pytest.raises(CheckpointMismatchError) as err:
        init_model(DET_CONFIG, checkpoints['partial'])
    message = str(err.value)
    for key in checkpoints['stage3']:
        assert key in message
    assert 'allow_partial_load=True' in message
    # The whole checkpoint loads, and so does the partial one when asked.
    init_model(DET_CONFIG, checkpoints['whole'])
    torch.manual_seed(1)
    model = init_model(DET_CONFIG, checkpoints['partial'],
                       allow_partial_load=True)
    whole = torch.load(checkpoints['whole'], weights_only=True)['state_dict']
    state = model.state_dict()
    # Stage 3 stays at its (other) random initialisation; stage 1 loaded.
    key = LAST_STAGE + 'fc_cls.weight'
    assert not torch.equal(state[key], whole[key])
    assert torch.equal(state['roi_head.bbox_head.0.fc_cls.weight'],
                       whole['roi_head.bbox_head.0.fc_cls.weight'])


def run_tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_image_demo_refuses_unless_allowed(checkpoints: Dict[str, str],
                                           tmp_path) -> None:
    from eva_mm.datasets.synthetic import generate_demo_shapes
    generate_demo_shapes(str(tmp_path / 'set'), num_train=1, num_val=1,
                         img_size=64, seed=1)
    image = sorted((tmp_path / 'set/train').glob('*.png'))[0]
    tool = osp.join(ROOT, 'tools', 'image_demo.py')
    args = [tool, str(image), DET_CONFIG, checkpoints['partial'],
            '--out-dir', str(tmp_path / 'out'), '--device', 'cpu']
    refused = run_tool(*args)
    assert refused.returncode != 0
    assert LAST_STAGE + 'fc_cls.weight' in refused.stderr
    assert '--allow-partial-load' in refused.stderr
    assert not (tmp_path / 'out').exists()
    allowed = run_tool(*args, '--allow-partial-load')
    assert allowed.returncode == 0, allowed.stderr
    output = allowed.stdout + allowed.stderr
    assert 'left at their initialisation' in output
    assert LAST_STAGE + 'fc_cls.weight' in output


@pytest.mark.slow
def test_tools_test_refuses_before_running(checkpoints: Dict[str, str],
                                           tmp_path) -> None:
    proc = run_tool(
        osp.join(ROOT, 'tools', 'test.py'), DET_CONFIG,
        checkpoints['partial'], '--work-dir', str(tmp_path / 'work'))
    assert proc.returncode != 0
    assert 'leaves' in proc.stderr and 'unloaded' in proc.stderr
    for key in checkpoints['stage3']:
        assert key in proc.stderr
    assert '--allow-partial-load' in proc.stderr


def test_check_reads_names_and_shapes_of_every_format(tmp_path) -> None:
    """The check on a small model: legacy (non-zip) torch files, which
    cannot be memory-mapped, are read; mis-shaped weights count as
    unloaded; unexpected entries and a missing BN step counter do not."""
    from eva_mm.checkpoints.model_check import check_whole_model_checkpoint
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    state = model.state_dict()
    legacy = tmp_path / 'legacy.pth'
    torch.save(dict(state, extra=torch.zeros(1)), legacy,
               _use_new_zipfile_serialization=False)
    report = check_whole_model_checkpoint(model, legacy)
    assert report.unexpected == ('extra', ) and report.left_at_init == ()
    no_counter = tmp_path / 'no_counter.pth'
    torch.save({k: v for k, v in state.items()
                if not k.endswith('num_batches_tracked')}, no_counter)
    assert check_whole_model_checkpoint(model, no_counter).missing == ()
    wrong = tmp_path / 'wrong.pth'
    torch.save(dict(state, **{'0.weight': torch.zeros(4, 2)}), wrong)
    with pytest.raises(CheckpointMismatchError,
                       match=r'0\.weight: checkpoint \[4, 2\] vs model'):
        check_whole_model_checkpoint(model, wrong)
    report = check_whole_model_checkpoint(model, wrong, allow_partial=True)
    assert report.left_at_init == ('0.weight', )
