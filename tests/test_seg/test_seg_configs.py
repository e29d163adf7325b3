"""The EVA semantic segmentation paper configs.

Each config builds at its real size on the meta device with the official
numbers (model, head, data, test, optimizer with layer-wise lr decay
recomputed here from the parameter names, schedule), and trains one
iteration once shrunk with the options ``tools/train.py --cfg-options``
would pass, on the generated ADE20K-format set.
"""
import re
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmseg.registry import MODELS

import eva_mm  # noqa: F401  (registers eva_mm.* for the configs)
from eva_mm.datasets.synthetic import generate_demo_ade
from paper_config_utils import build_on_meta, load_config

CONFIG_DIR = Path(__file__).resolve().parents[2] / 'configs/segmentation'
COCO = 'vit-adapter_mask2former_60k_coco-stuff164k-896'
ADE = 'vit-adapter_mask2former_coco-stuff-pre_20k_ade20k-896'
# Backbone per size: width, depth, drop path, deformable heads, first
# interaction range; and the recipe per (size, dataset): lr, layer decay.
SIZES = {
    'g': dict(width=1408, depth=40, drop_path=0.5, heads=16, first=[0, 9]),
    'l': dict(width=1024, depth=24, drop_path=0.3, heads=16, first=[0, 5]),
    'b': dict(width=768, depth=12, drop_path=0.2, heads=12, first=[0, 2]),
}
LR = {
    ('g', COCO): (1.5e-5, 0.95), ('g', ADE): (2.5e-5, 0.95),
    ('l', COCO): (2e-5, 0.9), ('l', ADE): (2e-5, 0.9),
    ('b', COCO): (3e-5, 0.95), ('b', ADE): (3e-5, 0.95),
}
# Dataset: classes, iterations, warm-up, images per GPU, total batch.
DATA = {
    COCO: dict(classes=171, iters=60000, warmup=1500, per_gpu=1, total=32,
               dataset='COCOStuffDataset'),
    ADE: dict(classes=150, iters=20000, warmup=500, per_gpu=1, total=64,
              dataset='ADE20KDataset'),
}
NAMES = sorted(f'eva-{size}-p16_{data}' for size, data in LR)
# The released variant with BEiT rel-pos bias, layer scale and 9 decoder
# layers (official *_relpos_layerscale_9dec.py configs): lr, layer decay,
# iterations, warm-up, images per GPU, total batch, decoder layers.
RELPOS_COCO = 'vit-adapter-relpos-ls_mask2former-9dec_80k_coco-stuff164k-896'
RELPOS_ADE = ('vit-adapter-relpos-ls_mask2former-9dec_coco-stuff-pre_40k_'
              'ade20k-896')
RELPOS = {
    RELPOS_COCO: dict(lr=1e-5, decay=0.95, iters=80000, warmup=1500,
                      per_gpu=2, total=32, classes=171,
                      dataset='COCOStuffDataset'),
    RELPOS_ADE: dict(lr=1e-5, decay=0.9, iters=40000, warmup=1500,
                     per_gpu=2, total=32, classes=150,
                     dataset='ADE20KDataset'),
}
RELPOS_NAMES = sorted(f'eva-g-p16_{data}' for data in RELPOS)
# The official constructor puts these head modules at layer 0
# (seg/mmcv_custom/layer_decay_optimizer_constructor.py:17-38).
HEAD_LAYER_ZERO = ('decode_head.mask_embed.', 'decode_head.cls_embed.',
                   'decode_head.level_embed.', 'decode_head.query_embed.',
                   'decode_head.query_feat.')


pytestmark = pytest.mark.registry_scope('mmseg')


def split(name: str) -> tuple:
    """(size letter, dataset key) of a config name."""
    size, data = re.match(r'eva-(\w)-p16_(.*)', name).groups()
    return size, data


def hand_layer_id(name: str, depth: int) -> int:
    """BEiT/EVA layer ids: embeddings and the head's query, level, class
    and mask embeddings 0, block i is i + 1, the rest (the adapter, the
    rest of the head) last, as in the official EVA seg constructor."""
    if name in ('backbone.cls_token', 'backbone.pos_embed') or \
            name.startswith(('backbone.patch_embed.', *HEAD_LAYER_ZERO)):
        return 0
    match = re.match(r'backbone\.blocks\.(\d+)\.', name)
    return int(match.group(1)) + 1 if match else depth + 1


def test_every_config_is_covered() -> None:
    # EVA-02's configs (eva02-*) are tests/test_seg/test_eva02_seg.py's.
    assert {p.stem for p in CONFIG_DIR.glob('eva-*.py')} == set(NAMES +
                                                            RELPOS_NAMES)


def check_pipelines(cfg: Config, classes: int) -> None:
    """The official 896 pipelines, slide test and multi-scale + flip TTA."""
    train = {t.type: t for t in cfg.train_dataloader.dataset.pipeline}
    assert (train['RandomResize'].scale, train['RandomResize'].ratio_range,
            train['RandomResize'].keep_ratio) == ((3584, 896), (0.5, 2.0),
                                                  True)
    assert train['RandomCrop'].crop_size == (896, 896)
    assert train['RandomCrop'].cat_max_ratio == 0.75
    assert train['RandomFlip'].prob == 0.5
    assert 'PhotoMetricDistortion' in train
    # ADE20K's label 0 is "other": ignored.
    assert train['LoadAnnotations'].get('reduce_zero_label',
                                        False) == (classes == 150)
    test = {t.type: t for t in cfg.test_dataloader.dataset.pipeline}
    assert test['Resize'].scale == (3584, 896)
    assert test['ResizeToMultiple'].size_divisor == 32
    assert cfg.model.test_cfg == dict(
        mode='slide', crop_size=(896, 896), stride=(512, 512))
    assert cfg.model.data_preprocessor.size == (896, 896)
    scales, to_multiple, flips, *_ = cfg.tta_pipeline[1].transforms
    assert to_multiple == [dict(type='ResizeToMultiple', size_divisor=32)]
    short_sides = [t.scale[1] for t in scales]
    assert short_sides == [512, 640, 768, 896, 1024, 1152, 1280]
    assert [t.prob for t in flips] == [0., 1.]
    # Every multi-scale view padded to a full 896 window (PadShortSide).
    assert (cfg.tta_model.type, cfg.tta_model.size,
            cfg.tta_model.pad_val) == ('eva_mm.PadShortSideSegTTAModel', 896,
                                       0)
    # EVA's semantic map at 1/4 resolution; DDP as the official config.
    assert cfg.model.semantic_at_mask_resolution is True
    assert cfg.model.head_ffn_with_cp is True
    assert cfg.find_unused_parameters is False


@pytest.mark.parametrize('name', NAMES)
def test_paper_config_builds_on_meta(name: str) -> None:
    size, data = split(name)
    arch, recipe = SIZES[size], DATA[data]
    lr, decay = LR[(size, data)]
    cfg = load_config(CONFIG_DIR, name)
    check_pipelines(cfg, recipe['classes'])
    dataset = cfg.train_dataloader.dataset
    assert dataset.type == recipe['dataset']
    assert cfg.train_dataloader.batch_size == recipe['per_gpu']
    assert cfg.auto_scale_lr.base_batch_size == recipe['total']
    assert cfg.train_cfg.max_iters == recipe['iters']
    warmup, poly = cfg.param_scheduler
    # mmengine runs end - begin - 1 scheduler steps: + 1 for mmcv 1.x's.
    assert (warmup.type, warmup.start_factor, warmup.end) == (
        'LinearLR', 1e-6, recipe['warmup'] + 1)
    # mmcv 1.x: poly over [0, T], the warm-up multiplied on top.
    assert (poly.type, poly.power, poly.eta_min, poly.begin, poly.end) == (
        'PolyLR', 1.0, 0.0, 0, recipe['iters'] + 1)
    if data == ADE:
        # Stage 2 starts from the stage-1 (COCO-Stuff) model of its size.
        assert cfg.load_from.startswith(f'work_dirs/eva-{size}-p16_{COCO}/')
    else:
        assert cfg.model.backbone.init_cfg.type == 'Pretrained'

    cfg.model.backbone.init_cfg = None
    model = build_on_meta(cfg, MODELS)
    backbone, head = model.backbone, model.decode_head
    assert type(model).__name__ == 'Mask2FormerEncoderDecoder'
    assert (backbone.embed_dims, len(backbone.blocks)) == (arch['width'],
                                                           arch['depth'])
    assert backbone.patch_size == 16 and backbone.cls_token is not None
    assert backbone.pos_embed.shape == (1, 1 + 56 * 56, arch['width'])
    assert backbone.blocks[-1].drop_path.drop_prob == pytest.approx(
        arch['drop_path'])
    assert backbone.interaction_indexes[0] == arch['first']
    assert backbone.interaction_indexes[-1][1] == arch['depth'] - 1
    deform = backbone.interactions[0].injector.attn
    assert deform.num_heads == arch['heads'] and deform.num_points == 4
    if size == 'g':
        vit = sum(p.numel() for n, p in backbone.named_parameters()
                  if n.startswith(('blocks', 'patch_embed', 'pos_embed',
                                   'cls_token')))
        # EVA-g: about one billion parameters in the ViT (paper, Table 1).
        assert vit == pytest.approx(1.0e9, rel=0.02)
    # Head: 200 queries, 1024 channels, 6-layer deformable pixel decoder
    # (32 heads, 3 levels, 4 points, FFN 4096), 8 decoder layers.
    assert head.num_queries == 200 and head.num_classes == recipe['classes']
    assert head.cls_embed.out_features == recipe['classes'] + 1
    encoder = head.pixel_decoder.encoder
    assert len(encoder.layers) == 6
    attn = encoder.layers[0].self_attn
    assert (attn.embed_dims, attn.num_heads, attn.num_levels,
            attn.num_points) == (1024, 32, 3, 4)
    assert encoder.layers[0].ffn.layers[0][0].out_features == 4096
    assert head.transformer_decoder.num_layers == 8
    assert head.transformer_decoder.layers[0].cross_attn.attn.num_heads == 32

    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    num_layers = arch['depth'] + 2
    seen = set()
    for group in optim_wrapper.optimizer.param_groups:
        assert group['betas'] == (0.9, 0.999)
        for pname, param in zip(group['param_names'], group['params']):
            layer = hand_layer_id(pname, arch['depth'])
            assert group['lr'] == pytest.approx(
                lr * decay**(num_layers - 1 - layer)), pname
            # Official: 1-D and biases only (pos_embed, cls_token decayed).
            no_decay = param.ndim == 1 or pname.endswith('.bias')
            assert group['weight_decay'] == (0. if no_decay else 0.05), pname
            seen.add(pname)
    assert seen == {n for n, p in model.named_parameters() if p.requires_grad}


def shrink_options(cfg: Config, data_root: Path) -> Dict[str, object]:
    """What ``--cfg-options`` would pass to run a paper config on CPU: a
    4-block ViT of width 64 at patch 8, a 32-channel head, 64 px crops of
    the 96 px generated images, one iteration."""
    options: Dict[str, object] = {
        # A preset name, as a command line can give (DeiT-Ti widths).
        'model.backbone.arch': 'tiny',
        'model.backbone.img_size': 64,
        'model.backbone.patch_size': 8,
        'model.backbone.with_cp': False,
        'model.backbone.init_cfg': None,
        'model.backbone.conv_inplane': 16,
        'model.backbone.deform_num_heads': 4,
        'model.backbone.interaction_indexes': None,
        'model.data_preprocessor.size': (64, 64),
        'model.test_cfg.crop_size': (64, 64),
        'model.test_cfg.stride': (32, 32),
        'model.decode_head.in_channels': [192] * 4,
        'model.decode_head.feat_channels': 32,
        'model.decode_head.out_channels': 32,
        'model.decode_head.num_queries': 16,
        'model.decode_head.pixel_decoder.encoder.num_layers': 1,
        'model.decode_head.pixel_decoder.encoder.layer_cfg.self_attn_cfg.'
        'embed_dims': 32,
        'model.decode_head.pixel_decoder.encoder.layer_cfg.self_attn_cfg.'
        'num_heads': 4,
        'model.decode_head.pixel_decoder.encoder.layer_cfg.ffn_cfg.'
        'embed_dims': 32,
        'model.decode_head.pixel_decoder.encoder.layer_cfg.ffn_cfg.'
        'feedforward_channels': 64,
        'model.decode_head.pixel_decoder.positional_encoding.num_feats': 16,
        'model.decode_head.positional_encoding.num_feats': 16,
        'model.decode_head.transformer_decoder.num_layers': 1,
        'model.decode_head.train_cfg.num_points': 256,
        'load_from': None,
        # One iteration, then the validation that ends every run.
        'train_cfg.max_iters': 1,
    }
    for attn in ('self_attn_cfg', 'cross_attn_cfg'):
        prefix = f'model.decode_head.transformer_decoder.layer_cfg.{attn}.'
        options[prefix + 'embed_dims'] = 32
        options[prefix + 'num_heads'] = 4
    prefix = 'model.decode_head.transformer_decoder.layer_cfg.ffn_cfg.'
    options[prefix + 'embed_dims'] = 32
    options[prefix + 'feedforward_channels'] = 64
    pipeline: List[dict] = cfg.train_dataloader.dataset.pipeline
    for index, transform in enumerate(pipeline):
        key = f'train_dataloader.dataset.pipeline.{index}.'
        if transform.type == 'RandomResize':
            options[key + 'scale'] = (384, 96)
        elif transform.type == 'RandomCrop':
            options[key + 'crop_size'] = (64, 64)
    for index, transform in enumerate(cfg.val_dataloader.dataset.pipeline):
        if transform.type == 'Resize':
            options[f'val_dataloader.dataset.pipeline.{index}.scale'] = (384,
                                                                         96)
    for loader in ('train_dataloader', 'val_dataloader'):
        split = 'training' if loader == 'train_dataloader' else 'validation'
        options.update({
            f'{loader}.batch_size': 2 if split == 'training' else 1,
            f'{loader}.num_workers': 0,
            f'{loader}.persistent_workers': False,
            f'{loader}.dataset.data_root': str(data_root),
            f'{loader}.dataset.data_prefix.img_path': f'images/{split}',
            f'{loader}.dataset.data_prefix.seg_map_path':
            f'annotations/{split}',
            # COCO-Stuff's converted labels end in _labelTrainIds.png.
            f'{loader}.dataset.seg_map_suffix': '.png',
        })
    return options


@pytest.mark.slow
@pytest.mark.parametrize('name', NAMES)
def test_paper_config_trains_one_iteration_shrunk(
        name: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    data_root = tmp_path_factory.getbasetemp() / 'seg_config_ade'
    generate_demo_ade(str(data_root), num_train=4, num_val=1, num_classes=8)
    cfg = load_config(CONFIG_DIR, name)
    cfg.merge_from_dict(shrink_options(cfg, data_root))
    cfg.work_dir = str(tmp_path_factory.mktemp(name))
    cfg.log_level = 'WARNING'
    runner = Runner.from_cfg(cfg)
    before = runner.model.backbone.blocks[0].attn.qkv.weight.detach().clone()
    runner.train()
    assert runner.iter == 1
    loss = runner.message_hub.get_scalar('train/loss').current()
    assert torch.isfinite(torch.tensor(loss))
    assert not torch.equal(before,
                           runner.model.backbone.blocks[0].attn.qkv.weight)
    # Validated by sliding windows at the end of the run.
    miou = runner.message_hub.get_scalar('val/mIoU').current()
    assert 0 <= miou <= 100


@pytest.mark.parametrize('name', RELPOS_NAMES)
def test_relpos_variant_config(name: str) -> None:
    """The rel-pos + layer-scale + 9-decoder-layer variant: the official
    variant configs' architecture and recipe, everything else as the plain
    giant config."""
    recipe = RELPOS[split(name)[1]]
    cfg = load_config(CONFIG_DIR, name)
    check_pipelines(cfg, recipe['classes'])
    assert cfg.train_dataloader.dataset.type == recipe['dataset']
    assert cfg.train_dataloader.batch_size == recipe['per_gpu']
    assert cfg.auto_scale_lr.base_batch_size == recipe['total']
    assert cfg.train_cfg.max_iters == recipe['iters']
    assert cfg.optim_wrapper.optimizer.lr == recipe['lr']
    assert cfg.optim_wrapper.paramwise_cfg.layer_decay_rate == recipe['decay']
    warmup, poly = cfg.param_scheduler
    assert (warmup.start_factor, warmup.end) == (1e-6, recipe['warmup'] + 1)
    assert (poly.begin, poly.end, poly.power) == (0, recipe['iters'] + 1,
                                                  1.0)
    if recipe['classes'] == 150:
        assert cfg.load_from.startswith(
            f'work_dirs/eva-g-p16_{RELPOS_COCO}/')
    cfg.model.backbone.init_cfg = None
    model = build_on_meta(cfg, MODELS)
    block = model.backbone.blocks[0]
    # BEiT relative position bias over the 56 x 56 grid (+3 cls entries),
    # one table per block, and layer scale.
    assert block.attn.relative_position_bias_table.shape == (111 * 111 + 3,
                                                             16)
    assert block.gamma_1.shape == block.gamma_2.shape == (1408, )
    assert len(model.decode_head.transformer_decoder.layers) == 9


def test_poly_schedule_with_warmup_on_top() -> None:
    """The ADE20K schedule's lr at every iteration equals mmcv 1.x's
    formula: poly over [0, T] times the linear warm-up factor."""
    cfg = load_config(CONFIG_DIR, f'eva-g-p16_{ADE}')
    lr0, ratio, warmup, total = 2.5e-5, 1e-6, 500, 20000
    from mmengine.registry import PARAM_SCHEDULERS
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=lr0)
    schedulers = [
        PARAM_SCHEDULERS.build(dict(scheduler, optimizer=optimizer))
        for scheduler in cfg.param_scheduler
    ]
    lrs = []
    for _ in range(total):
        lrs.append(optimizer.param_groups[0]['lr'])
        optimizer.step()
        for scheduler in schedulers:
            scheduler.step()
    t = np.arange(total, dtype=np.float64)
    # mmcv 1.x PolyLrUpdaterHook.get_lr and get_warmup_lr('linear').
    poly = lr0 * (1 - t / total)**1.0
    factor = np.where(t < warmup, 1 - (1 - t / warmup) * (1 - ratio), 1.)
    np.testing.assert_allclose(lrs, poly * factor, rtol=1e-6, atol=1e-15)
    # Not the 2.6% higher lr of a poly that starts after the warm-up.
    assert lrs[warmup] == pytest.approx(lr0 * (1 - warmup / total))
