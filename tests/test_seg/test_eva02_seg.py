"""The EVA-02 segmentation configs and ``--src-format official-eva02-seg``.

Configs: each eva02-* segmentation config builds at full size on the meta
device with the official numbers (EVA-02/seg/configs/eva02/upernet/*.py:
backbone, Feature2Pyramid + UperNet head, slide test, data, layer-wise lr
decay recomputed from the parameter names, schedule), the released
checkpoints' full layout converts into exactly its keys and shapes, and it
trains one iteration once shrunk.

Converter: a synthetic checkpoint in the official layout (names and shapes
as EVA-02/seg/backbone/eva2.py and mmseg 0.x's UPerHead/FCNHead build them,
RoPE buffers by the official formula) loads strictly into the shrunk
config's model with every tensor unchanged, and the neck's four feature
maps equal eva2.py's forward written out here (cls token, RoPE on the patch
tokens only, SwiGLU with sub-LN, fpn1..fpn4).
"""
import math
from pathlib import Path
from typing import Dict, Optional

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

from eva_mm.datasets.synthetic import generate_demo_ade
from eva_mm.checkpoints.errors import CheckpointError
from eva_mm.checkpoints.converters import SRC_FORMATS, check_fits_config
from eva02_official import (fused_value_sums, official_attention,
                            official_rope, official_swiglu_branch)
from paper_config_utils import load_config
from test_seg.test_seg_configs import CONFIG_DIR, hand_layer_id
from test_seg.test_seg_configs import shrink_options as seg_shrink_options

pytestmark = pytest.mark.registry_scope('mmseg')
ROOT = Path(__file__).resolve().parents[2]
# name: arch, crop, depth, width, out indices, drop path, head channels,
# lr, layer decay, iterations, images per GPU, total batch, test stride,
# train/test scale (EVA-02/seg/configs/eva02/upernet/*.py, README).
RECIPES = {
    'eva02-l-p16_upernet_80k_ade20k-512':
    dict(arch='eva02-large', crop=512, depth=24, width=1024,
         out=(7, 11, 15, 23), drop_path=0.2, channels=1024, lr=4e-5,
         decay=0.9, iters=80000, per_gpu=2, total=16, stride=341,
         scale=(2048, 512)),
    'eva02-b-p16_upernet_60k_ade20k-512':
    dict(arch='eva02-base', crop=512, depth=12, width=768,
         out=(3, 5, 7, 11), drop_path=0.15, channels=768, lr=6e-5,
         decay=0.85, iters=60000, per_gpu=8, total=32, stride=341,
         scale=(2048, 512)),
    'eva02-l-p16_upernet-1536_80k_ade20k-640':
    dict(arch='eva02-large', crop=640, depth=24, width=1024,
         out=(7, 11, 15, 23), drop_path=0.2, channels=1536, lr=4e-5,
         decay=0.9, iters=80000, per_gpu=2, total=16, stride=426,
         scale=(2560, 640)),
}


def test_every_eva02_config_is_covered() -> None:
    configs = (ROOT / 'configs/segmentation').glob('eva02-*.py')
    assert {p.stem for p in configs} == set(RECIPES)


def official_shapes(dim: int, depth: int, heads: int, mlp: int, img: int,
                    channels: int, aux_channels: int,
                    num_classes: int = 150) -> Dict[str, tuple]:
    """A released EVA-02 UperNet's state dict: EVA2(use_abs_pos_emb=True,
    rope=True, subln=True, naiveswiglu=True, qkv_bias=True,
    init_values=None, patch 16) (eva2.py:509-623: cls_token, pos_embed
    with a cls position, separate q/k/v + q_bias/v_bias, w1/w2/ffn_ln/w3,
    the shared rope saved at the top and in every block, fpn1 = deconv,
    SyncBN, GELU, deconv; fpn2 = deconv), mmseg 0.x UPerHead(in_channels=
    [dim] * 4, pool_scales=(1, 2, 3, 6)) and FCNHead(num_convs=1), their
    ConvModules with SyncBN (conv without bias; conv/bn names)."""
    side, hd = img // 16, dim // heads
    s = {'backbone.cls_token': (1, 1, dim),
         'backbone.pos_embed': (1, side * side + 1, dim),
         'backbone.patch_embed.proj.weight': (dim, 3, 16, 16),
         'backbone.patch_embed.proj.bias': (dim, ),
         'backbone.rope.freqs_cos': (side * side, hd),
         'backbone.rope.freqs_sin': (side * side, hd)}

    def add(prefix: str, **shapes: tuple) -> None:
        s.update({prefix + k.replace('__', '.'): v
                  for k, v in shapes.items()})

    def bn(prefix: str, c: int) -> None:
        add(prefix, weight=(c, ), bias=(c, ), running_mean=(c, ),
            running_var=(c, ), num_batches_tracked=())

    def conv_module(prefix: str, cout: int, cin: int, k: int) -> None:
        s[prefix + 'conv.weight'] = (cout, cin, k, k)
        bn(prefix + 'bn.', cout)

    for i in range(depth):
        add(f'backbone.blocks.{i}.', norm1__weight=(dim, ),
            norm1__bias=(dim, ), attn__q_proj__weight=(dim, dim),
            attn__k_proj__weight=(dim, dim), attn__v_proj__weight=(dim, dim),
            attn__q_bias=(dim, ), attn__v_bias=(dim, ),
            attn__rope__freqs_cos=(side * side, hd),
            attn__rope__freqs_sin=(side * side, hd),
            attn__proj__weight=(dim, dim), attn__proj__bias=(dim, ),
            norm2__weight=(dim, ), norm2__bias=(dim, ),
            mlp__w1__weight=(mlp, dim), mlp__w1__bias=(mlp, ),
            mlp__w2__weight=(mlp, dim), mlp__w2__bias=(mlp, ),
            mlp__ffn_ln__weight=(mlp, ), mlp__ffn_ln__bias=(mlp, ),
            mlp__w3__weight=(dim, mlp), mlp__w3__bias=(dim, ))
    add('backbone.fpn1.', **{'0__weight': (dim, dim, 2, 2),
                             '0__bias': (dim, ),
                             '3__weight': (dim, dim, 2, 2),
                             '3__bias': (dim, )})
    bn('backbone.fpn1.1.', dim)
    add('backbone.fpn2.', **{'0__weight': (dim, dim, 2, 2),
                             '0__bias': (dim, )})
    head = 'decode_head.'
    for j in range(4):
        conv_module(f'{head}psp_modules.{j}.1.', channels, dim, 1)
    conv_module(head + 'bottleneck.', channels, dim + 4 * channels, 3)
    for j in range(3):
        conv_module(f'{head}lateral_convs.{j}.', channels, dim, 1)
        conv_module(f'{head}fpn_convs.{j}.', channels, channels, 3)
    conv_module(head + 'fpn_bottleneck.', channels, 4 * channels, 3)
    add(head, conv_seg__weight=(num_classes, channels, 1, 1),
        conv_seg__bias=(num_classes, ))
    conv_module('auxiliary_head.convs.0.', aux_channels, dim, 3)
    add('auxiliary_head.', conv_seg__weight=(num_classes, aux_channels, 1,
                                             1),
        conv_seg__bias=(num_classes, ))
    return s


def convert(source: Dict[str, torch.Tensor]):
    return SRC_FORMATS['official-eva02-seg'].convert(source, None)


def build(cfg: Config) -> torch.nn.Module:
    from mmengine.utils import import_modules_from_strings
    import_modules_from_strings(**cfg.custom_imports)
    init_default_scope('mmseg')
    from mmseg.registry import MODELS
    return MODELS.build(cfg.model)


# The shrunk segmentor: 4 blocks of width 64 at 64 px, 32-channel heads.
DIM, DEPTH, HEADS, MLP, IMG, CH, AUX = 64, 4, 4, 96, 64, 32, 16


def shrunk(name: str) -> Config:
    cfg = load_config(CONFIG_DIR, name)
    cfg.model.backbone.update(
        arch=dict(embed_dims=DIM, num_layers=DEPTH, num_heads=HEADS,
                  mlp_hidden_dim=MLP),
        swiglu_mlp=True, scale_mlp=True, use_rot_pos_emb=True,
        ref_feat_shape=16, img_size=IMG, out_indices=(0, 1, 2, 3))
    cfg.model.neck.embed_dim = DIM
    cfg.model.decode_head.update(in_channels=[DIM] * 4, channels=CH)
    cfg.model.auxiliary_head.update(in_channels=DIM, channels=AUX)
    return cfg


def official_features(p: Dict[str, torch.Tensor], image: torch.Tensor,
                      bn_eps: float) -> list:
    """eva2.py's EVA2.forward_features (xattn=False) from the source
    tensors, with out_indices (0, 1, 2, 3); the SyncBN in eval mode."""
    x = F.conv2d(image, p['backbone.patch_embed.proj.weight'],
                 p['backbone.patch_embed.proj.bias'], stride=16)
    b, c, h, w = x.shape
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([p['backbone.cls_token'].expand(b, -1, -1), x], dim=1)
    x = x + p['backbone.pos_embed']
    features = []
    for i in range(DEPTH):
        q = f'backbone.blocks.{i}.'
        y = F.layer_norm(x, (c, ), p[q + 'norm1.weight'],
                         p[q + 'norm1.bias'], eps=1e-6)
        # RoPE on the patch tokens, the cls token untouched (eva2.py:305-
        # 313).
        x = x + official_attention(y, p, q, HEADS, num_prefix_tokens=1)
        x = x + official_swiglu_branch(x, p, q)
        features.append(x[:, 1:].transpose(1, 2).reshape(b, c, h, w))
    f = 'backbone.fpn1.'
    up = F.conv_transpose2d(features[0], p[f + '0.weight'], p[f + '0.bias'],
                            stride=2)
    up = F.batch_norm(up, p[f + '1.running_mean'], p[f + '1.running_var'],
                      p[f + '1.weight'], p[f + '1.bias'], eps=bn_eps)
    up = F.conv_transpose2d(F.gelu(up), p[f + '3.weight'], p[f + '3.bias'],
                            stride=2)
    return [
        up,
        F.conv_transpose2d(features[1], p['backbone.fpn2.0.weight'],
                           p['backbone.fpn2.0.bias'], stride=2),
        features[2],
        F.max_pool2d(features[3], 2, 2)
    ]


def random_official(
        generator: Optional[torch.Generator] = None
) -> Dict[str, torch.Tensor]:
    """The shrunk segmentor as the official file holds it: random values
    (from ``generator``, seeded 0 by default), positive BN variances, the
    RoPE tables eva2.py computes."""
    generator = generator or torch.Generator().manual_seed(0)
    shapes = official_shapes(DIM, DEPTH, HEADS, MLP, IMG, CH, AUX)
    source = {}
    for key, shape in shapes.items():
        if key.endswith('num_batches_tracked'):
            source[key] = torch.tensor(7)
        elif key.endswith('running_var'):
            source[key] = torch.rand(shape, generator=generator) + 0.5
        elif '.freqs_' in key:
            source[key] = official_rope(DIM // HEADS, IMG // 16)[key[-9:]]
        else:
            source[key] = torch.randn(shape, generator=generator) * 0.2
    return source


def test_converts_loads_strictly_and_computes_as_official(
        tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    source = random_official(generator)
    cfg = shrunk('eva02-l-p16_upernet_80k_ade20k-512')
    config = tmp_path / 'upernet_tiny.py'
    cfg.dump(str(config))
    conversion = convert(source)
    check_fits_config(conversion.state_dict, str(config))
    model = build(cfg).eval()
    result = model.load_state_dict(conversion.state_dict, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    rope = {k for k in source if '.freqs_' in k}
    assert set(conversion.dropped) == rope and len(rope) == 2 + 2 * DEPTH
    assert conversion.meta['num_classes'] == 150
    state = model.state_dict()
    for src, dst in (
            ('backbone.fpn1.0.weight', 'neck.upsample_4x.0.weight'),
            ('backbone.fpn1.1.running_var', 'neck.upsample_4x.1.running_var'),
            ('backbone.fpn1.3.bias', 'neck.upsample_4x.3.bias'),
            ('backbone.fpn2.0.weight', 'neck.upsample_2x.0.weight'),
            ('backbone.blocks.1.mlp.w1.weight',
             'backbone.blocks.1.mlp.fc1_g.weight'),
            ('backbone.blocks.1.mlp.ffn_ln.bias',
             'backbone.blocks.1.mlp.norm.bias'),
            ('backbone.pos_embed', 'backbone.pos_embed'),
            ('decode_head.fpn_bottleneck.bn.weight',
             'decode_head.fpn_bottleneck.bn.weight'),
            ('auxiliary_head.convs.0.conv.weight',
             'auxiliary_head.convs.0.conv.weight')):
        assert torch.equal(state[dst], source[src]), src
    # Every other tensor unchanged: the same multiset of values, q, k and
    # v (fused) counting as one.
    model_values = sorted(float(v.double().sum()) for v in state.values())
    source_values = fused_value_sums(
        {k: v for k, v in source.items() if k not in rope})
    assert model_values == pytest.approx(source_values, abs=1e-9)
    # The neck's pyramid as eva2.py computes it.
    image = torch.randn(2, 3, IMG, IMG, generator=generator)
    with torch.no_grad():
        ours = model.neck(model.backbone(image))
    bn_eps = model.neck.upsample_4x[1].eps
    for level, (a, b) in enumerate(
            zip(ours, official_features(source, image, bn_eps))):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5,
                                   msg=f'level {level}')


def test_wrong_files_fail_clearly() -> None:
    with pytest.raises(CheckpointError, match='official-seg'):
        convert({'backbone.patch_embed.proj.weight': torch.zeros(1)})
    shapes = official_shapes(DIM, 1, HEADS, MLP, IMG, CH, AUX)
    source = {k: torch.zeros(s) for k, s in shapes.items()}
    source['neck.extra.weight'] = torch.zeros(1)
    with pytest.raises(CheckpointError, match='neck.extra.weight'):
        convert(source)


@pytest.mark.parametrize('name', sorted(RECIPES))
def test_paper_config_builds_on_meta(name: str) -> None:
    want, cfg = RECIPES[name], load_config(CONFIG_DIR, name)
    crop = (want['crop'], ) * 2
    train = {t.type: t for t in cfg.train_dataloader.dataset.pipeline}
    assert (train['RandomResize'].scale,
            train['RandomResize'].ratio_range) == (want['scale'], (0.5, 2.0))
    assert (train['RandomCrop'].crop_size,
            train['RandomCrop'].cat_max_ratio) == (crop, 0.75)
    assert train['LoadAnnotations'].reduce_zero_label
    assert 'PhotoMetricDistortion' in train
    test = {t.type: t for t in cfg.test_dataloader.dataset.pipeline}
    assert test['Resize'].scale == want['scale']
    assert cfg.model.test_cfg == dict(mode='slide', crop_size=crop,
                                      stride=(want['stride'], ) * 2)
    assert cfg.model.data_preprocessor.size == crop
    assert cfg.train_dataloader.batch_size == want['per_gpu']
    assert cfg.auto_scale_lr.base_batch_size == want['total']
    assert cfg.train_cfg.max_iters == want['iters']
    warmup, poly = cfg.param_scheduler
    assert (warmup.type, warmup.start_factor, warmup.end) == ('LinearLR',
                                                              1e-6, 1501)
    assert (poly.type, poly.power, poly.eta_min, poly.end) == (
        'PolyLR', 1.0, 0.0, want['iters'] + 1)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'

    with torch.device('meta'):
        model = build(cfg)
    backbone = model.backbone
    grid = want['crop'] // 16
    assert (backbone.embed_dims, len(backbone.blocks)) == (want['width'],
                                                           want['depth'])
    assert backbone.pos_embed.shape == (1, 1 + grid * grid, want['width'])
    assert backbone.cls_token is not None and backbone.norm is None
    assert backbone.use_rot_pos_emb
    assert tuple(backbone.out_indices) == want['out']
    assert all(block.window_size == 0 for block in backbone.blocks)
    assert backbone.blocks[-1].drop_path.drop_prob == pytest.approx(
        want['drop_path'])
    assert type(model.neck).__name__ == 'Feature2Pyramid'
    assert model.decode_head.channels == want['channels']
    # FCNHead channels=256 (upernet_beit.py); 1536 in the 640 px config.
    assert model.auxiliary_head.channels == (1536 if want['crop'] == 640
                                             else 256)
    assert model.decode_head.num_classes == 150

    # Layer-wise decay as the official constructor: embeddings 0, block i
    # i + 1, the rest num_layers + 1; no decay on 1-D and biases only.
    cfg.optim_wrapper.type = 'OptimWrapper'
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    num_layers, seen = want['depth'] + 2, set()
    for group in optim_wrapper.optimizer.param_groups:
        for pname, param in zip(group['param_names'], group['params']):
            layer = hand_layer_id(pname, want['depth'])
            assert group['lr'] == pytest.approx(
                want['lr'] * want['decay']**(num_layers - 1 - layer)), pname
            no_decay = param.ndim == 1 or pname.endswith('.bias')
            assert group['weight_decay'] == (0. if no_decay else 0.05), pname
            seen.add(pname)
    assert seen == {n for n, p in model.named_parameters() if p.requires_grad}

    # The released checkpoints' layout, converted on the meta device.
    heads = want['width'] // 64
    shapes = official_shapes(want['width'], want['depth'], heads,
                             int(want['width'] * 4 * 2 / 3), want['crop'],
                             want['channels'],
                             model.auxiliary_head.channels)
    source = {k: torch.empty(s, device='meta') for k, s in shapes.items()}
    converted = convert(source).state_dict
    assert {k: tuple(v.shape) for k, v in converted.items()} == {
        k: tuple(v.shape) for k, v in model.state_dict().items()
    }


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(RECIPES))
def test_paper_config_trains_one_iteration_shrunk(
        name: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    data_root = tmp_path_factory.getbasetemp() / 'eva02_seg_ade'
    if not data_root.exists():
        generate_demo_ade(str(data_root), num_train=4, num_val=1,
                          num_classes=8)
    cfg = load_config(CONFIG_DIR, name)
    # The EVA-01 configs' shrink options for data, crops and schedule; the
    # UperNet model's own.
    options = {
        key: value
        for key, value in seg_shrink_options(cfg, data_root).items()
        if not key.startswith(('model.backbone', 'model.decode_head'))
    }
    options.update({
        'model.backbone.arch': 'eva02-tiny',
        'model.backbone.img_size': 64,
        'model.backbone.out_indices': (2, 5, 8, 11),
        'model.neck.embed_dim': 192,
        'model.decode_head.in_channels': [192] * 4,
        'model.decode_head.channels': 32,
        'model.auxiliary_head.in_channels': 192,
        'model.auxiliary_head.channels': 16,
        'optim_wrapper.type': 'OptimWrapper',
    })
    cfg.merge_from_dict(options)
    cfg.work_dir = str(tmp_path_factory.mktemp(name))
    cfg.log_level = 'WARNING'
    runner = Runner.from_cfg(cfg)
    fc1_g = runner.model.backbone.blocks[0].mlp.fc1_g.weight
    before = fc1_g.detach().clone()
    runner.train()
    assert runner.iter == 1
    assert math.isfinite(runner.message_hub.get_scalar('train/loss').current())
    assert not torch.equal(before, fc1_g)
    miou = runner.message_hub.get_scalar('val/mIoU').current()
    assert 0 <= miou <= 100
