"""Fine-tuning a tiny EVA classifier through mmengine's Runner on CPU.

The recipe of the paper configs, shrunk: mean pooling + fc_norm + linear
head, frozen patch embedding, drop path, label smoothing with CutMix,
AdamW with layer-wise lr decay, EMA of the weights, then testing for
top-1/top-5 on a generated image folder. Each check uses a reference
computed another way: Adam's first step moves every parameter by its
group's lr, the EMA is recomputed from the recorded weights, and the
accuracies are recomputed from a direct forward pass of the EMA model.
"""
import copy
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import torch
from mmengine.fileio import load
from mmengine.hooks import Hook
from mmengine.registry import DefaultScope
from mmengine.runner import Runner
from PIL import Image
from timm.layers import resample_abs_pos_embed

from eva_mm.engine.safe_checkpoint import register_mmengine_safe_globals
from eva_mm.models import EVAViT

# Runs tools or trains in subprocesses: left out of `pytest -m 'not slow'`.
pytestmark = pytest.mark.slow

# The image folder of the image_folder fixture (conftest.py).
NUM_CLASSES, SIZE = 5, 32

LR, DECAY, MOMENTUM, ITERS = 1e-3, 0.5, 0.25, 4
WATCHED = ('backbone.patch_embed.proj.weight', 'backbone.pos_embed',
           'backbone.blocks.0.norm1.bias', 'backbone.blocks.1.norm1.bias',
           'backbone.fc_norm.bias', 'head.fc.bias')
# 2 blocks: embeddings are layer 0, block i layer i + 1, fc_norm and the
# head layer 3, so lr scales are 0.5 ** (3 - layer).
LR_SCALE = {'backbone.pos_embed': DECAY**3,
            'backbone.blocks.0.norm1.bias': DECAY**2,
            'backbone.blocks.1.norm1.bias': DECAY,
            'backbone.fc_norm.bias': 1., 'head.fc.bias': 1.}


class RecordWeights(Hook):
    """Copies the watched parameters before and after every train step."""

    def __init__(self) -> None:
        self.before: List[Dict[str, torch.Tensor]] = []
        self.after: List[Dict[str, torch.Tensor]] = []

    @staticmethod
    def _copy(runner) -> Dict[str, torch.Tensor]:
        params = dict(runner.model.named_parameters())
        return {name: params[name].detach().clone() for name in WATCHED}

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        self.before.append(self._copy(runner))

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        self.after.append(self._copy(runner))


def config(data_root: Path, work_dir: Path) -> dict:
    pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
    loader = dict(
        batch_size=5,
        num_workers=0,
        dataset=dict(
            type='CustomDataset', data_root=str(data_root),
            pipeline=pipeline))
    return dict(
        default_scope='mmpretrain',
        work_dir=str(work_dir),
        model=dict(
            type='ImageClassifier',
            backbone=dict(
                type='eva_mm.EVAViT',
                arch=dict(embed_dims=32, num_layers=2, num_heads=2,
                          mlp_hidden_dim=64),
                img_size=SIZE,
                patch_size=8,
                out_type='avg_featmap',
                final_norm=False,
                use_fc_norm=True,
                drop_path_rate=0.1,
                freeze_patch_embed=True),
            head=dict(
                type='LinearClsHead',
                num_classes=NUM_CLASSES,
                in_channels=32,
                loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1,
                          mode='original')),
            train_cfg=dict(augments=[dict(type='CutMix', alpha=1.0)]),
            data_preprocessor=dict(
                num_classes=NUM_CLASSES, mean=[127.5] * 3, std=[127.5] * 3,
                to_rgb=True)),
        train_dataloader=dict(
            **loader, sampler=dict(type='DefaultSampler', shuffle=True)),
        test_dataloader=dict(
            **loader, sampler=dict(type='DefaultSampler', shuffle=False)),
        test_evaluator=dict(type='Accuracy', topk=(1, 5)),
        test_cfg=dict(),
        train_cfg=dict(by_epoch=False, max_iters=ITERS, val_interval=ITERS),
        optim_wrapper=dict(
            optimizer=dict(type='AdamW', lr=LR, weight_decay=0.05),
            constructor='eva_mm.LayerDecayOptimWrapperConstructor',
            paramwise_cfg=dict(layer_decay_rate=DECAY)),
        custom_hooks=[
            dict(type='EMAHook', momentum=MOMENTUM, priority='ABOVE_NORMAL')
        ],
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=ITERS,
                            by_epoch=False),
            logger=dict(type='LoggerHook', interval=1)),
        custom_imports=dict(imports=['eva_mm'], allow_failed_imports=False),
        randomness=dict(seed=0),
        log_level='WARNING')


@pytest.fixture(scope='module')
def trained(image_folder, tmp_path_factory):
    """Train, keep the EMA weights, then test the checkpoint as test.py does.

    Testing runs in a new Runner from the saved checkpoint: a Runner's
    test() rebuilds the EMA model from the raw weights in before_run, while
    a checkpoint carries both and the EMA hook restores them on load.
    """
    work_dir = tmp_path_factory.mktemp('work')
    # A module-scoped fixture cannot take the function-scoped
    # registry_scope marker; the same public call restores the scopes here.
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        recorder = RecordWeights()
        runner = Runner.from_cfg(config(image_folder, work_dir))
        runner.register_hook(recorder, priority='LOWEST')
        runner.train()
        ema_hook = next(h for h in runner.hooks
                        if type(h).__name__ == 'EMAHook')
        ema_model = copy.deepcopy(ema_hook.ema_model.module).eval()
        raw = {n: p.detach().clone()
               for n, p in runner.model.named_parameters()}
        param_groups = runner.optim_wrapper.optimizer.param_groups

        cfg = config(image_folder, work_dir)
        cfg['load_from'] = str(work_dir / f'iter_{ITERS}.pth')
        # What tools/test.py's build_runner does before loading it.
        register_mmengine_safe_globals()
        # Also dump each image's scores, as tools/test.py --out does.
        cfg['test_evaluator'] = [
            cfg['test_evaluator'],
            dict(type='DumpResults',
                 out_file_path=str(work_dir / 'preds.pkl'))
        ]
        metrics = Runner.from_cfg(cfg).test()
        predictions = {
            Path(p['img_path']).relative_to(image_folder).as_posix():
            p['pred_score'] for p in load(work_dir / 'preds.pkl')
        }
    return dict(recorder=recorder, ema_model=ema_model, raw=raw,
                param_groups=param_groups, metrics=metrics,
                predictions=predictions,
                checkpoint=work_dir / f'iter_{ITERS}.pth')


def test_layer_decay_sets_each_first_step(trained) -> None:
    before, after = trained['recorder'].before[0], trained['recorder'].after[0]
    # Adam's first step is lr * g / (|g| + eps): a move of the group's lr for
    # every element whose gradient is well above eps (1e-8), and never more.
    # These parameters have no weight decay, so nothing else moves them.
    for name, scale in LR_SCALE.items():
        step = (after[name] - before[name]).abs().flatten()
        lr = LR * scale
        assert step.max() <= lr * (1 + 1e-5), name
        at_lr = (step - lr).abs() <= 1e-3 * lr
        assert at_lr.float().mean() > 0.9, (name, step)


def test_patch_embedding_stays_frozen(trained) -> None:
    recorder = trained['recorder']
    name = 'backbone.patch_embed.proj.weight'
    assert torch.equal(recorder.before[0][name], recorder.after[-1][name])
    grouped = {n for g in trained['param_groups'] for n in g['param_names']}
    assert name not in grouped and 'backbone.blocks.0.attn.qkv.weight' in (
        grouped)


def test_ema_follows_the_weights(trained) -> None:
    recorder = trained['recorder']
    ema = dict(trained['ema_model'].named_parameters())
    for name in WATCHED:
        # mmengine's EMA copies the weights at its first update, then
        # ema = (1 - momentum) * ema + momentum * weights after every step.
        expected = recorder.after[0][name]
        for weights in recorder.after[1:]:
            expected = (1 - MOMENTUM) * expected + MOMENTUM * weights[name]
        torch.testing.assert_close(ema[name], expected, msg=name)
    assert not torch.equal(ema['head.fc.bias'], trained['raw']['head.fc.bias'])


def test_test_reports_top1_top5_of_the_ema_model(trained,
                                                 image_folder) -> None:
    metrics, model = trained['metrics'], trained['ema_model']
    # A direct forward pass of the EMA weights: images as LoadImageFromFile
    # gives them (BGR), labels from the sorted class folders.
    names, images, labels = [], [], []
    for label, folder in enumerate(sorted(image_folder.iterdir())):
        for path in sorted(folder.iterdir()):
            bgr = np.asarray(Image.open(path).convert('RGB'))[..., ::-1]
            images.append(torch.from_numpy(bgr.copy()).permute(2, 0, 1))
            labels.append(label)
            names.append(path.relative_to(image_folder).as_posix())
    with torch.no_grad():
        inputs = model.data_preprocessor(dict(inputs=images), False)['inputs']
        scores = model(inputs, mode='tensor').softmax(dim=1)
    # The tested model is the EMA model, image by image, not the raw one.
    assert sorted(trained['predictions']) == sorted(names)
    for name, score in zip(names, scores):
        torch.testing.assert_close(trained['predictions'][name], score)
    raw_model = copy.deepcopy(model)
    raw_model.load_state_dict(trained['raw'], strict=False)
    with torch.no_grad():
        raw_scores = raw_model(inputs, mode='tensor').softmax(dim=1)
    assert (raw_scores - scores).abs().max() > 1e-3
    ranks = scores.argsort(dim=1, descending=True)
    labels = torch.tensor(labels)
    for k in (1, 5):
        hits = (ranks[:, :k] == labels[:, None]).any(dim=1).float().mean()
        assert metrics[f'accuracy/top{k}'] == pytest.approx(100. * hits.item())
    # Five classes: every label is in the top 5.
    assert metrics['accuracy/top5'] == 100.


def test_next_stage_loads_the_backbone_at_a_larger_size(trained) -> None:
    """As IN-21K 224 px -> IN-1K 336 px: backbone only, grid resized.

    The checkpoint's weights are the EMA weights (mmengine saves them as
    the state dict); the reference grid is timm's bicubic resampling.
    """
    backbone = EVAViT(
        arch=dict(embed_dims=32, num_layers=2, num_heads=2,
                  mlp_hidden_dim=64),
        img_size=48,
        patch_size=8,
        out_type='avg_featmap',
        final_norm=False,
        use_fc_norm=True,
        init_cfg=dict(
            type='Pretrained', checkpoint=str(trained['checkpoint']),
            prefix='backbone.'))
    backbone.init_weights()
    ema = {name[len('backbone.'):]: param
           for name, param in trained['ema_model'].named_parameters()
           if name.startswith('backbone.')}
    for name, param in backbone.named_parameters():
        if name == 'pos_embed':
            expected = resample_abs_pos_embed(
                ema[name], [6, 6], [4, 4], num_prefix_tokens=1,
                interpolation='bicubic', antialias=False)
        else:
            expected = ema[name]
        torch.testing.assert_close(param.data, expected, msg=name)
