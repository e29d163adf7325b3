"""Around the MIM loop: non-finite losses, DeepSpeed precision on CPU,
export resizing."""
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from mmengine.model import BaseModel
from mmengine.runner import Runner

import eva_mm  # noqa: F401
from eva_mm.engine import DeepSpeedStrategy, NonFiniteLossError
from eva_mm.engine.strategies.deepspeed import check_mmengine_version
from eva_mm.models import EVAViT
from eva_mm.models.layers.pos_embed import resize_patch_kernel
from eva_mm.checkpoints.loading import load_backbone_checkpoint

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    'export_mim', ROOT / 'tools/model_converters/export_mim.py')
export_mim = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(export_mim)


class NaNAtCalls(BaseModel):
    """A one-parameter regression whose loss is NaN at the given calls."""

    def __init__(self, nan_calls) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.nan_calls = set(nan_calls)
        self.calls = 0

    def forward(self, inputs, data_samples=None, mode='loss'):
        self.calls += 1
        loss = ((self.weight - inputs)**2).mean()
        if self.calls in self.nan_calls:
            loss = loss * float('nan')
        return dict(loss=loss)


def _runner(tmp_path: Path, model: BaseModel, **hook) -> Runner:
    return Runner(
        model=model,
        work_dir=str(tmp_path),
        train_dataloader=dict(
            dataset=[dict(inputs=torch.ones(1))] * 16,
            sampler=dict(type='DefaultSampler', shuffle=False),
            batch_size=2,
            collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        train_cfg=dict(by_epoch=False, max_iters=8),
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=2,
                            by_epoch=False),
            logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=[dict(type='eva_mm.NonFiniteLossHook', **hook)],
        experiment_name=f'nan_{id(model)}')


@pytest.mark.slow
def test_non_finite_loss_stops_naming_iteration_and_checkpoint(tmp_path):
    runner = _runner(tmp_path, NaNAtCalls({5}))
    with pytest.raises(NonFiniteLossError) as err:
        runner.train()
    message = str(err.value)
    assert 'at iteration 5' in message
    assert str(tmp_path / 'iter_4.pth') in message
    # No checkpoint is written after the bad iteration.
    assert not (tmp_path / 'iter_6.pth').exists()


@pytest.mark.slow
def test_non_finite_loss_reloads_last_checkpoint(tmp_path):
    model = NaNAtCalls({5})
    runner = _runner(tmp_path, model, reload=True)
    runner.train()
    # The NaN step's update was undone by reloading iteration 4's weights:
    # the weight is finite and went on converging to the target 1.
    assert torch.isfinite(model.weight).all()
    assert 0.5 < model.weight.item() < 1.0
    assert model.calls == 8

    # Without a checkpoint to go back to, it stops.
    with pytest.raises(NonFiniteLossError, match='none saved yet'):
        _runner(tmp_path / 'early', NaNAtCalls({1}), reload=True).train()



def test_deepspeed_strategy_refuses_other_mmengine_releases():
    """The strategy re-does mmengine 0.10.7's __init__: other releases are
    named and refused rather than silently losing their parent's changes."""
    import mmengine
    check_mmengine_version(mmengine.__version__)  # the pinned one passes
    for version in ('0.10.6', '0.11.0', '1.0.0'):
        with pytest.raises(RuntimeError,
                           match=r'_strategy/deepspeed\.py:261-319.*'
                           rf'mmengine {version} is installed'):
            check_mmengine_version(version)

def test_deepspeed_fp16_on_cpu_is_refused_clearly():
    with pytest.raises(ValueError, match='does not support fp16 .* on CPU'):
        DeepSpeedStrategy(fp16=dict(enabled=True, initial_scale_power=16))
    strategy = DeepSpeedStrategy(
        bf16=dict(enabled=True), zero_optimization=dict(stage=1))
    assert strategy.config['bf16'] == {'enabled': True}
    assert type(strategy.config['zero_optimization']) is dict


def test_export_resizes_patch_14_to_16(tmp_path):
    torch.manual_seed(0)
    student = EVAViT(
        arch=dict(embed_dims=32, num_layers=2, num_heads=2,
                  mlp_hidden_dim=64),
        img_size=56, patch_size=14, out_type='raw', with_mask_token=True)
    mim_state = {f'backbone.{k}': v for k, v in student.state_dict().items()}
    mim_state['head.fc.weight'] = torch.zeros(8, 32)
    src = tmp_path / 'iter_1.pth'
    torch.save({'state_dict': mim_state}, src)

    # 56 px: 4x4 patches of 14; at patch 16, 64 px keeps the 4x4 grid.
    export_mim.export(str(src), str(tmp_path / 'p16.pth'), patch_size=16,
                      img_size=64)
    saved = torch.load(tmp_path / 'p16.pth', weights_only=True)['state_dict']
    assert 'mask_token' not in saved and 'head.fc.weight' not in saved
    torch.testing.assert_close(
        saved['patch_embed.proj.weight'],
        resize_patch_kernel(student.patch_embed.proj.weight.detach(),
                            (16, 16)))
    torch.testing.assert_close(saved['pos_embed'], student.pos_embed.detach())
    downstream = EVAViT(
        arch=dict(embed_dims=32, num_layers=2, num_heads=2,
                  mlp_hidden_dim=64),
        img_size=64, patch_size=16)
    load_backbone_checkpoint(downstream, str(tmp_path / 'p16.pth'))
    torch.testing.assert_close(downstream.blocks[1].mlp.fc2.weight,
                               student.blocks[1].mlp.fc2.weight)


_DEEPSPEED_PREPARE = '''
import json, sys
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmpretrain.structures import DataSample
import eva_mm
from eva_mm.engine import DeepSpeedStrategy

cfg = Config.fromfile(sys.argv[1])
init_default_scope('mmpretrain')
kwargs = {k: v for k, v in cfg.strategy.items() if k != 'type'}
strategy = DeepSpeedStrategy(**kwargs)
model, optim_wrapper = strategy.prepare(
    cfg.model, optim_wrapper=cfg.optim_wrapper, dispatch_kwargs={})
mim = model.model.module
teacher = mim.target_generator
sample = DataSample()
sample.set_mask(torch.ones(8, 8, dtype=torch.long).triu())
# As default_collate gives it: one stacked uint8 batch.
data = dict(inputs=torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8),
            data_samples=[sample])
losses = model.train_step(data, optim_wrapper)
print(json.dumps(dict(
    student=sorted({str(p.dtype) for p in mim.parameters()}),
    teacher=sorted({str(p.dtype) for p in teacher.parameters()}),
    target=str(teacher(torch.zeros(1, 3, 64, 64, dtype=torch.bfloat16)).dtype),
    loss=float(losses['loss']))))
'''


@pytest.mark.slow
def test_deepspeed_bf16_keeps_the_teacher_fp32(tmp_path):
    """DeepSpeed's engine casts the model to bf16 (``module.bfloat16()``);
    the teacher stays fp32 and runs under bf16 autocast."""
    config = ROOT / ('configs/mim/'
                     'eva-mim_demo-tiny-p8_clip-tiny_shapes_deepspeed-bf16.py')
    script = tmp_path / 'prepare.py'
    script.write_text(_DEEPSPEED_PREPARE)
    done = subprocess.run(
        [sys.executable, str(script), str(config)], cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1'),
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result['student'] == ['torch.bfloat16']
    assert result['teacher'] == ['torch.float32']
    assert result['target'] == 'torch.bfloat16'
    assert math.isfinite(result['loss'])
