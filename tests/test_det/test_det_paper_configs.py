"""The detection paper configs (issue #4).

Every config builds with its real backbone on the meta device and carries
the official numbers (EVA-01/det configs for EVA-g, ViTDet's for ViT-B/L);
the window/global block layout, the relative position tables for 1024, 1280
and 1536 px inputs and the layer-decay groups are checked on the built
models. Each config then runs once shrunk with the options that
``tools/train.py --cfg-options`` would pass (a tiny backbone, narrow heads,
64 px generated COCO- or LVIS-format images): one training iteration, or one
test pass for the 1536 px evaluation configs. The COCO config trains and
evaluates through tools/train.py itself, and the LVIS config learns for a
few iterations (repeat factor sampling, federated loss) and evaluates with
the LVIS metric.
"""
import json
import math
import re
import subprocess
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import torch
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.logging import MessageHub
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

import eva_mm  # noqa: F401  (registers eva_mm.* for the configs)
from eva_mm.datasets.synthetic.shapes import generate_demo_lvis
from eva_mm.models.backbones import EVAViT
from eva_mm.models.layers.rel_pos_attention import _rel_pos_lookup
from paper_config_utils import build_on_meta, load_config
from train_runs import read_losses, train_cmd

CONFIG_DIR = Path(__file__).resolve().parents[2] / 'configs/detection'
GIANT_GLOBAL = tuple(range(3, 40, 4))
SHAPES = ('circle', 'square', 'triangle', 'star')
SMALL = 64  # side of the generated images
# The LSJ crop: mmdet's RandomCrop with detectron2's offset.
LSJ_CROP = 'eva_mm.Detectron2RandomCrop'


def _name(arch: str, size: int, data: str, suffix: str = '') -> str:
    head = 'cascade-rcnn' if data == 'objects365' else 'cascade-mask-rcnn'
    return f'eva-{arch}-p16_{head}_lsj-{size}_{data}{suffix}'


# name: arch, train size, test size, classes, lr, layer decay, drop path,
# iterations, lr steps, warm-up iterations.
RECIPES: Dict[str, dict] = {}
for _data, _classes in (('coco', 80), ('lvis-v1', 1203)):
    _giant = dict(
        arch='g', classes=_classes, decay=0.9, drop_path=0.6,
        lr=2.5e-5 if _data == 'coco' else 2e-4,
        iters=45000 if _data == 'coco' else 75001,
        steps=[40000, 44999] if _data == 'coco' else [70000, 75000],
        warmup=500 if _data == 'coco' else 250)
    for _size in (1024, 1280):
        RECIPES[_name('g', _size, _data)] = dict(
            _giant, size=_size, test_size=_size)
    RECIPES[_name('g', 1280, _data, '_test-1536')] = dict(
        _giant, size=1280, test_size=1536)
    for _arch, _decay, _drop_path in (('b', 0.7, 0.1), ('l', 0.8, 0.4)):
        RECIPES[_name(_arch, 1024, _data)] = dict(
            arch=_arch, size=1024, test_size=1024, classes=_classes,
            decay=_decay, drop_path=_drop_path,
            lr=1e-4 if _data == 'coco' else 2e-4,
            iters=184375 if _data == 'coco' else 156250,
            steps=[163889, 177546] if _data == 'coco' else [138889, 150463],
            warmup=250)
RECIPES[_name('g', 1024, 'objects365')] = dict(
    arch='g', size=1024, test_size=1024, classes=365, decay=0.9,
    drop_path=0.6, lr=2.5e-5, iters=380000, steps=[337777, 379999],
    warmup=500)
# arch: embed dims, blocks, head dims, window, global blocks.
ARCHS = {
    'g': (1408, 40, 88, 16, GIANT_GLOBAL),
    'l': (1024, 24, 64, 14, (5, 11, 17, 23)),
    'b': (768, 12, 64, 14, (2, 5, 8, 11)),
}


pytestmark = pytest.mark.registry_scope('mmdet')


def test_every_config_is_covered() -> None:
    # EVA-02's configs (eva02-*) are tests/test_det/test_eva02_det.py's.
    assert {p.stem for p in CONFIG_DIR.glob('eva-*.py')} == set(RECIPES)


@pytest.mark.parametrize('name', sorted(RECIPES))
def test_config_builds_with_the_official_numbers(name: str) -> None:
    cfg, want = load_config(CONFIG_DIR, name), RECIPES[name]
    dims, depth, head_dims, window, global_blocks = ARCHS[want['arch']]
    model = build_on_meta(cfg, MODELS)
    backbone = model.backbone
    assert backbone.pos_embed.is_meta
    assert (backbone.embed_dims, len(backbone.blocks)) == (dims, depth)
    if want['arch'] == 'g':
        # EVA-g: about one billion parameters (paper, Table 1); no cls
        # token, no final norm.
        assert sum(p.numel() for p in backbone.parameters()) == \
            pytest.approx(1.02e9, rel=0.01)
    # Patch 16, position embedding for the training grid (the 1536 px
    # evaluation configs: the test grid, resized on loading), no cls token.
    grid = want['test_size'] // 16
    assert backbone.patch_embed.proj.weight.shape == (dims, 3, 16, 16)
    assert backbone.pos_embed.shape == (1, grid * grid, dims)
    assert backbone.cls_token is None and backbone.norm is None
    assert not any(p.requires_grad for p in backbone.patch_embed.parameters())
    assert backbone.blocks[-1].drop_path.drop_prob == pytest.approx(
        want['drop_path'])
    assert backbone.with_cp == (want['arch'] == 'g')
    # Window attention everywhere but the global blocks; decomposed
    # relative positions sized for the window or the whole training grid.
    for index, block in enumerate(backbone.blocks):
        side = grid if index in global_blocks else window
        assert block.window_size == (0 if index in global_blocks else window)
        assert block.attn.rel_pos_h.shape == (2 * side - 1, head_dims)
        assert block.attn.rel_pos_w.shape == (2 * side - 1, head_dims)
    assert model.neck.in_channels == dims

    stages = model.roi_head.bbox_head
    assert len(stages) == 3 and all(
        head.reg_class_agnostic and head.num_classes == want['classes']
        for head in stages)
    assert [a.pos_iou_thr for a in model.roi_head.bbox_assigner] == [
        0.5, 0.6, 0.7
    ]
    # detectron2's cascade: stages 2-3 re-match without sampling, stage
    # losses weighted 1.
    assert type(model.roi_head).__name__ == 'Detectron2CascadeRoIHead'
    assert [type(s).__name__ for s in model.roi_head.bbox_sampler] == [
        'RandomSampler', 'PseudoSampler', 'PseudoSampler'
    ]
    assert model.roi_head.stage_loss_weights == [1.0, 1.0, 1.0]
    # detectron2's RPN: 2000 boxes per level before NMS, 1000 after.
    assert (cfg.model.train_cfg.rpn_proposal.nms_pre,
            cfg.model.train_cfg.rpn_proposal.max_per_img) == (2000, 1000)
    rcnn_test = cfg.model.test_cfg.rcnn
    if 'objects365' in name:
        assert not model.roi_head.with_mask
    else:
        # One mask head (detectron2's), not one per stage.
        assert type(model.roi_head.mask_head).__name__ == \
            'MasknessFCNMaskHead'
        assert model.roi_head.mask_head.maskness_thr == 0.5
        assert model.roi_head.mask_head.rescore_by_maskness
        # detectron2's predictor init (values: test_recipe_details.py).
        assert model.roi_head.mask_head.predictor_std == 0.001
    if 'lvis' in name:
        assert type(stages[0].loss_cls).__name__ == 'FederatedLoss'
        assert (stages[0].loss_cls.num_sampled_classes,
                stages[0].loss_cls.freq_weight_power) == (50, 0.5)
        assert cfg.train_dataloader.sampler == dict(
            type='eva_mm.RepeatFactorSampler', repeat_thr=0.001,
            shuffle=True)
        assert cfg.test_evaluator.type == 'eva_mm.LVISMetric'
        assert dict(rcnn_test.nms) == dict(type='nms', iou_threshold=0.5)
        expected = (0.001, 1000) if want['test_size'] == 1536 else (0.02,
                                                                     300)
        assert (rcnn_test.score_thr, rcnn_test.max_per_img) == expected
        assert cfg.test_evaluator.get('max_dets_per_image',
                                      300) == expected[1]
    else:
        assert dict(rcnn_test.nms) == dict(
            type='soft_nms', iou_threshold=0.6, method='linear')
        # No per-image cap after soft-NMS (detectron2).
        assert (rcnn_test.score_thr, rcnn_test.max_per_img) == (0.0, -1)

    # Data: LSJ at the training size, square padding to the test size.
    train = {t.type: t for t in cfg.train_dataloader.dataset.pipeline}
    assert train['RandomResize'].scale == (want['size'], ) * 2
    assert train['RandomResize'].ratio_range == (0.1, 2.0)
    assert train[LSJ_CROP].crop_size == (want['size'], ) * 2
    test = {t.type: t for t in cfg.test_dataloader.dataset.pipeline}
    assert test['Resize'].scale == (want['test_size'], ) * 2
    # detectron2's PIL bilinear resizes (tests/test_det/
    # test_recipe_details.py checks the pixels).
    assert train['RandomResize'].backend == test['Resize'].backend == \
        'pillow'
    assert cfg.model.data_preprocessor.pad_size_divisor == want['test_size']
    # 1 image per GPU x 64 GPUs.
    assert cfg.train_dataloader.batch_size == 1
    assert cfg.auto_scale_lr.base_batch_size == 64

    # Schedule and optimizer.
    assert cfg.train_cfg.max_iters == want['iters']
    warmup, steps = cfg.param_scheduler
    assert (warmup.type, warmup.start_factor, warmup.end) == (
        'LinearLR', 0.001, want['warmup'])
    assert (steps.type, steps.milestones, steps.gamma) == (
        'MultiStepLR', want['steps'], 0.1)
    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.type, optimizer.lr, optimizer.betas,
            optimizer.weight_decay) == ('AdamW', want['lr'], (0.9, 0.999),
                                        0.1)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.paramwise_cfg.layer_decay_rate == want['decay']


def hand_layer_id(name: str, depth: int) -> int:
    """ViTDet's get_vit_lr_decay_rate: embeddings 0, block i is i + 1."""
    if name == 'backbone.pos_embed':
        return 0
    match = re.match(r'backbone\.blocks\.(\d+)\.', name)
    return int(match.group(1)) + 1 if match else depth + 1


@pytest.mark.parametrize('name', [
    _name('g', 1024, 'coco'),
    _name('b', 1024, 'lvis-v1'),
    _name('l', 1024, 'coco')
])
def test_layer_decay_groups(name: str) -> None:
    """Every trainable parameter in exactly one group, at its layer's lr."""
    cfg, want = load_config(CONFIG_DIR, name), RECIPES[name]
    depth = ARCHS[want['arch']][1]
    model = build_on_meta(cfg, MODELS)
    # AmpOptimWrapper needs a GPU; the groups come from the constructor.
    cfg.optim_wrapper.type = 'OptimWrapper'
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    # mmengine appends a parameter-less group that only logs the base lr.
    groups = [
        group for group in optim_wrapper.param_groups
        if group is not optim_wrapper.base_param_settings
    ]
    seen = []
    for group in groups:
        for name_, param in zip(group['param_names'], group['params']):
            layer = hand_layer_id(name_, depth)
            scale = want['decay']**(depth + 1 - layer)
            assert group['lr'] == pytest.approx(want['lr'] * scale), name_
            # EVA-g decays every parameter (official config lines 36-37);
            # ViTDet's B/L keep the constructor's exemptions.
            no_decay = want['arch'] != 'g' and (param.ndim == 1 or
                                                name_.endswith(
                ('.bias', 'pos_embed', 'rel_pos_h', 'rel_pos_w')))
            assert group['weight_decay'] == (0. if no_decay else 0.1), name_
            seen.append(name_)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(seen) == sorted(trainable)
    assert not any(n.startswith('backbone.patch_embed') for n in seen)
    # The position embedding is the bottom: decay ** (depth + 1).
    assert min(g['lr'] for g in groups) == pytest.approx(
        want['lr'] * want['decay']**(depth + 1))


def _linear_resize(table: np.ndarray, length: int) -> np.ndarray:
    """F.interpolate(mode='linear', align_corners=False) by hand."""
    src = table.shape[0]
    # Sample centres of the target cells in source coordinates (PyTorch
    # computes them in float32, hence the test's tolerance).
    coords = np.clip((np.arange(length) + 0.5) * src / length - 0.5, 0,
                     src - 1)
    return np.stack([
        np.interp(coords, np.arange(src), table[:, c])
        for c in range(table.shape[1])
    ], axis=1)


@pytest.mark.parametrize('train_size, test_size',
                         [(1024, 1024), (1024, 1280), (1024, 1536),
                          (1280, 1536)])
def test_global_rel_pos_tables_for_input_sizes(train_size: int,
                                               test_size: int) -> None:
    """A global block's tables, learned for the training grid, at run time.

    EVA-g's global blocks learn (2 * 64 - 1) rows at 1024 px and (2 * 80 - 1)
    at 1280 px; a 1536 px input (96 x 96 tokens) looks up 191 rows,
    linearly interpolated, and entry [i, j] embeds the offset i - j.
    """
    train_grid, test_grid = train_size // 16, test_size // 16
    table = torch.randn(2 * train_grid - 1, 88)
    looked_up = _rel_pos_lookup(table, test_grid)
    assert looked_up.shape == (test_grid, test_grid, 88)
    resized = _linear_resize(table.double().numpy(), 2 * test_grid - 1)
    for i, j in ((0, 0), (0, test_grid - 1), (test_grid - 1, 0), (5, 3)):
        np.testing.assert_allclose(looked_up[i, j].numpy(),
                                   resized[i - j + test_grid - 1],
                                   rtol=0, atol=1e-4)
    if train_size == test_size:
        assert torch.equal(looked_up[0, 0], table[train_grid - 1])


def test_backbone_runs_at_a_larger_test_size() -> None:
    """EVA-g's layout at 1.5x the training grid, as 1024 px -> 1536 px.

    A narrow 8-block backbone with the giant's window/global pattern, trained
    at 128 px (8 x 8 tokens), runs on 192 px (12 x 12: windows padded, global
    tables and position embedding resized at run time) and gives the output
    of the same weights loaded into a model built for 192 px.
    """
    kwargs = dict(
        arch=dict(embed_dims=32, num_layers=8, num_heads=2,
                  mlp_hidden_dim=64),
        patch_size=16, out_type='featmap', with_cls_token=False,
        final_norm=False, rel_pos='decomposed', window_size=5,
        global_block_indexes=(3, 7))
    torch.manual_seed(0)
    trained = EVAViT(img_size=128, **kwargs).eval()
    with torch.no_grad():
        for block in trained.blocks:
            block.attn.rel_pos_h.normal_()
            block.attn.rel_pos_w.normal_()
    built_for_test = EVAViT(img_size=192, **kwargs).eval()
    built_for_test.load_state_dict(trained.state_dict())
    assert built_for_test.blocks[3].attn.rel_pos_h.shape == (23, 16)
    assert built_for_test.blocks[2].attn.rel_pos_h.shape == (9, 16)
    image = torch.randn(1, 3, 192, 192)
    with torch.no_grad():
        out = trained(image)[0]
        torch.testing.assert_close(out, built_for_test(image)[0])
    assert out.shape == (1, 32, 12, 12)


# -- one shrunk run per config ------------------------------------------


@pytest.fixture(scope='module')
def lvis_shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 train / 2 val generated images, COCO and LVIS v1 annotations."""
    root = tmp_path_factory.mktemp('det_shapes')
    generate_demo_lvis(str(root), num_train=4, num_val=2, img_size=SMALL,
                       seed=5)
    return root


def shrink_options(cfg: Config, root: Path) -> Dict[str, object]:
    """What ``tools/train.py --cfg-options`` passes to run ``cfg`` on CPU.

    Plain values only, as on a command line: a tiny backbone, 32-channel
    pyramid and heads, few RoIs, the generated 64 px set with its 4 classes.
    """
    lvis = 'LVIS' in cfg.train_dataloader.dataset.type
    ann = 'lvis_v1_{}.json' if lvis else 'instances_{}.json'
    options = {
        'model.backbone.arch': 'tiny',
        'model.backbone.img_size': SMALL,
        'model.backbone.window_size': 2,
        'model.neck.in_channels': 192,
        'model.neck.out_channels': 32,
        'model.rpn_head.in_channels': 32,
        'model.rpn_head.feat_channels': 32,
        'model.roi_head.bbox_roi_extractor.out_channels': 32,
        'model.data_preprocessor.pad_size_divisor': SMALL,
        'model.train_cfg.rpn_proposal.max_per_img': 32,
        'model.test_cfg.rpn.max_per_img': 16,
        'optim_wrapper.type': 'OptimWrapper',
        'train_cfg.max_iters': 1,
        # IterBasedTrainLoop validates after the last iteration otherwise.
        'train_cfg.val_begin': 100,
        'load_from': None,
    }
    for stage in range(3):
        prefix = f'model.roi_head.bbox_head.{stage}.'
        options.update({
            prefix + 'in_channels': 32,
            prefix + 'conv_out_channels': 32,
            prefix + 'fc_out_channels': 64,
            prefix + 'num_classes': len(SHAPES),
            f'model.train_cfg.rcnn.{stage}.sampler.num': 16,
        })
        if lvis:
            options.update({
                prefix + 'loss_cls.num_classes': len(SHAPES),
                prefix + 'loss_cls.ann_file':
                str(root / 'annotations/lvis_v1_train.json'),
            })
    if cfg.model.roi_head.get('mask_head'):
        options.update({
            'model.roi_head.mask_roi_extractor.out_channels': 32,
            'model.roi_head.mask_head.in_channels': 32,
            'model.roi_head.mask_head.conv_out_channels': 32,
            'model.roi_head.mask_head.num_classes': len(SHAPES),
        })
    for split, loader in (('train', 'train_dataloader'),
                          ('val', 'val_dataloader'),
                          ('val', 'test_dataloader')):
        options.update({
            f'{loader}.num_workers': 0,
            f'{loader}.persistent_workers': False,
            f'{loader}.dataset.data_root': str(root),
            f'{loader}.dataset.ann_file': 'annotations/' + ann.format(split),
            f'{loader}.dataset.data_prefix.img': f'{split}/',
            f'{loader}.dataset.metainfo.classes': SHAPES,
        })
        for index, transform in enumerate(cfg[loader].dataset.pipeline):
            key = f'{loader}.dataset.pipeline.{index}.'
            if transform.type == 'RandomResize':
                options[key + 'scale'] = (SMALL, SMALL)
                # Under half size the image cannot hold the smallest
                # (32 px) anchor.
                options[key + 'ratio_range'] = (0.5, 2.0)
            elif transform.type == LSJ_CROP:
                options[key + 'crop_size'] = (SMALL, SMALL)
            elif transform.type == 'Resize':
                options[key + 'scale'] = (SMALL, SMALL)
    for evaluator in ('val_evaluator', 'test_evaluator'):
        options[f'{evaluator}.ann_file'] = str(root / 'annotations' /
                                                ann.format('val'))
    return options


def train_one_iteration(runner: Runner, weight: torch.Tensor) -> MessageHub:
    """Train ``runner`` (one iteration) and check ``weight`` was updated.

    Args:
        runner: A runner of :func:`shrunk_runner`.
        weight: A trained parameter of its model.

    Returns:
        The runner's message hub, whose total loss is checked finite.
    """
    before = weight.detach().clone()
    runner.train()
    assert runner.iter == 1
    assert not torch.equal(before, weight)
    hub = runner.message_hub
    assert math.isfinite(hub.get_scalar('train/loss').current())
    return hub


def shrunk_runner(name: str, root: Path, work_dir: Path,
                  **extra: object) -> Runner:
    cfg = load_config(CONFIG_DIR, name)
    cfg.merge_from_dict(dict(shrink_options(cfg, root), **extra))
    cfg.work_dir = str(work_dir)
    cfg.log_level = 'WARNING'
    return Runner.from_cfg(cfg)


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(RECIPES))
def test_paper_config_runs_shrunk(name: str, lvis_shapes: Path,
                                  tmp_path: Path) -> None:
    runner = shrunk_runner(name, lvis_shapes, tmp_path)
    if name.endswith('_test-1536'):
        # An evaluation config: one test pass over the 2 val images.
        metrics = runner.test()
        key = 'lvis/segm_AP' if 'lvis' in name else 'coco/segm_mAP'
        assert 0.0 <= metrics[key] <= 1.0
        return
    hub = train_one_iteration(runner,
                              runner.model.backbone.blocks[0].attn.qkv.weight)
    expected = {'loss_rpn_cls', 's0.loss_cls', 's2.loss_bbox'}
    if 'objects365' not in name:
        expected.add('loss_mask')  # one mask head, trained once
    for key in expected:
        assert math.isfinite(hub.get_scalar(f'train/{key}').current()), key
    if 'objects365' in name:
        assert not any('loss_mask' in key for key in hub.log_scalars)


def test_generated_lvis_annotations(lvis_shapes: Path) -> None:
    """LVIS fields of the generated set, recomputed from its COCO files."""
    ann_dir = lvis_shapes / 'annotations'
    coco = {
        split: json.loads((ann_dir / f'instances_{split}.json').read_text())
        for split in ('train', 'val')
    }
    train_images = {}
    for ann in coco['train']['annotations']:
        train_images.setdefault(ann['category_id'], set()).add(
            ann['image_id'])
    for split in ('train', 'val'):
        lvis = json.loads((ann_dir / f'lvis_v1_{split}.json').read_text())
        assert lvis['annotations'] == coco[split]['annotations']
        for category in lvis['categories']:
            count = len(train_images.get(category['id'], ()))
            assert category['image_count'] == count
            # 4 training images: every category is rare (1-10 images).
            assert category['frequency'] == 'r'
        for image in lvis['images']:
            drawn = {
                ann['category_id']
                for ann in lvis['annotations']
                if ann['image_id'] == image['id']
            }
            assert set(image['neg_category_ids']) == {1, 2, 3, 4} - drawn
            assert image['not_exhaustive_category_ids'] == []


def _cli_value(value: object) -> str:
    """A value as ``--cfg-options`` (mmengine's DictAction) parses it."""
    if isinstance(value, tuple):
        return '(' + ','.join(_cli_value(v) for v in value) + ')'
    return str(value)


@pytest.mark.slow
def test_coco_config_trains_and_evaluates_through_train_py(
        lvis_shapes: Path, tmp_path: Path) -> None:
    """tools/train.py with the shrink options on its command line."""
    name = _name('g', 1024, 'coco')
    options = shrink_options(load_config(CONFIG_DIR, name), lvis_shapes)
    options.update({
        'train_cfg.max_iters': 2,
        'train_cfg.val_begin': 1,
        'train_cfg.val_interval': 2,
        'default_hooks.logger.interval': 1,
    })
    cli = [f'{key}={_cli_value(value)}' for key, value in options.items()]
    subprocess.run(
        train_cmd(CONFIG_DIR / f'{name}.py', tmp_path, '--cfg-options',
                  *cli),
        check=True,
        capture_output=True)
    losses = read_losses(tmp_path)
    assert sorted(losses) == [1, 2]
    assert all(math.isfinite(loss) for loss in losses.values())
    records = [
        json.loads(line) for log in tmp_path.glob('*/vis_data/scalars.json')
        for line in log.read_text().splitlines()
    ]
    metrics = [r for r in records if 'coco/bbox_mAP' in r]
    assert len(metrics) == 1
    for key in ('coco/bbox_mAP', 'coco/segm_mAP'):
        assert 0.0 <= metrics[0][key] <= 1.0
    assert (tmp_path / 'iter_2.pth').exists()


@pytest.mark.slow
def test_lvis_config_learns_and_evaluates(lvis_shapes: Path,
                                          tmp_path: Path) -> None:
    """Repeat factor sampling and the federated loss on the generated LVIS
    set: the loss falls over a few iterations at a raised learning rate,
    then the LVIS metric evaluates the val split."""
    runner = shrunk_runner(
        _name('g', 1024, 'lvis-v1'), lvis_shapes, tmp_path, **{
            'train_cfg.max_iters': 12,
            'optim_wrapper.optimizer.lr': 1e-3,
            'param_scheduler.0.start_factor': 1.0,
            'randomness.seed': 0,
        })
    assert type(runner.train_dataloader.sampler).__name__ == \
        'RepeatFactorSampler'
    runner.train()
    # Every iteration's loss, from the message hub's history.
    losses = runner.message_hub.get_scalar('train/loss').data[0]
    assert len(losses) == 12
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])
    metrics = runner.val()
    for key in ('lvis/bbox_AP', 'lvis/segm_AP', 'lvis/segm_APr'):
        assert 0.0 <= metrics[key] <= 1.0, key
