"""The EVA-02 detection configs and ``--src-format official-eva02-det``.

Configs: each eva02-* detection config builds at full size on the meta
device with the official EVA-02 numbers (EVA-02/det/projects/ViTDet/
configs/eva2_*), the released checkpoints' full layout converts into it key
for key and shape for shape, and it runs one shrunk iteration on CPU with
the options ``tools/train.py --cfg-options`` would pass (the EVA-01
config tests' helpers, with the eva02-tiny backbone).

Converter: a synthetic checkpoint in the official layout (names and shapes
as EVA-02/det/detectron2/modeling/backbone/vit.py builds the ViT, with its
persistent RoPE buffers computed by the official formula; the rest as
EVA-01's detectron2 detectors, test_official_det_converter.py) loads
strictly into the shrunk config's model with every tensor unchanged, and
the backbone's feature map equals the official ViT's forward written out
here from the source tensors (window partition, RoPE per window or grid,
SwiGLU with sub-LN).
"""
import math
from functools import partial
from pathlib import Path
from typing import Dict, Optional, Sequence

import pytest
import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmengine.config import Config

from eva_mm.checkpoints.errors import CheckpointError
from eva_mm.checkpoints.converters import check_fits_config
from eva02_official import (fused_value_sums, official_attention,
                            official_rope, official_swiglu_branch)
from paper_config_utils import build_on_meta, load_config
from test_det_paper_configs import lvis_shapes, shrunk_runner  # noqa: F401
from test_official_det_converter import (DEPTH, DIM, FC, FPN, GLOBAL,
                                         HEADS, IMG, MLP, PATCH, WINDOW,
                                         build, dump_config,
                                         official_pos_embed, official_shapes)
from test_det_paper_configs import train_one_iteration
from test_official_det_converter import convert as eva01_convert
from test_official_det_converter import shrunk as eva01_shrunk

CONFIG_DIR = Path(__file__).resolve().parents[2] / 'configs/detection'

pytestmark = pytest.mark.registry_scope('mmdet')
L_GLOBAL_4, L_GLOBAL_8 = (5, 11, 17, 23), (2, 5, 8, 11, 14, 17, 20, 23)
# arch: embed dims, blocks, heads, SwiGLU hidden dims (int(dim * 4 * 2 / 3)).
ARCHS = {'l': (1024, 24, 16, 2730), 'b': (768, 12, 12, 2048)}


def _recipe(arch: str, size: int, window: int, global_blocks: tuple,
            drop_path: float, with_cp: bool, lr: float, decay: float,
            iters: int, warmup: int, batch: int, classes: int,
            steps: bool = True, test: tuple = ('nms', 0.05, 100),
            maskness: bool = False, ema: bool = False,
            max_dets: Optional[int] = None) -> dict:
    return dict(locals())


# name: the official numbers (EVA-02/det/projects/ViTDet/configs/eva2_*,
# EVA-02/det/README.md's evaluation commands), as the configs cite them.
RECIPES: Dict[str, dict] = {
    'eva02-l-p16_cascade-mask-rcnn_lsj-1024_coco':
    _recipe('l', 1024, 16, L_GLOBAL_4, 0.4, False, 6e-5, 0.8, 60000, 1000,
            144, 80),
    'eva02-l-p16_cascade-mask-rcnn_lsj-1536_coco':
    _recipe('l', 1536, 32, L_GLOBAL_8, 0.4, True, 5e-5, 0.8, 60000, 1000,
            128, 80, test=('soft_nms', 0.0, -1), maskness=True),
    'eva02-b-p16_cascade-mask-rcnn_lsj-1024_coco':
    _recipe('b', 1024, 16, (2, 5, 8, 11), 0.1, False, 5e-5, 0.7, 60000,
            1000, 128, 80),
    'eva02-b-p16_cascade-mask-rcnn_lsj-1536_coco':
    _recipe('b', 1536, 32, (1, 3, 5, 7, 9, 11), 0.1, False, 5e-5, 0.7,
            60000, 1000, 128, 80, test=('soft_nms', 0.0, -1),
            maskness=True),
    'eva02-l-p16_cascade-mask-rcnn_lsj-1024_lvis-v1':
    _recipe('l', 1024, 16, L_GLOBAL_4, 0.4, False, 1e-4, 0.8, 40000, 1000,
            128, 1203, test=('nms', 0.02, 300), max_dets=300),
    'eva02-l-p16_cascade-mask-rcnn_lsj-1536_lvis-v1':
    _recipe('l', 1536, 32, L_GLOBAL_8, 0.4, True, 1e-4, 0.8, 40000, 1000,
            128, 1203, test=('soft_nms', 0.02, -1), maskness=True,
            max_dets=300),
    'eva02-b-p16_cascade-mask-rcnn_lsj-1024_lvis-v1':
    _recipe('b', 1024, 16, (2, 5, 8, 11), 0.1, False, 1e-4, 0.7, 50000,
            1000, 128, 1203, test=('nms', 0.02, 300), max_dets=300),
    'eva02-l-p16_cascade-rcnn_lsj-1536_objects365':
    _recipe('l', 1536, 16, L_GLOBAL_8, 0.4, False, 6e-5, 0.8, 400000,
            5000, 160, 365),
    'eva02-l-p16_cascade-mask-rcnn_o365-pre_lsj-1536_coco':
    _recipe('l', 1536, 16, L_GLOBAL_8, 0.3, True, 4e-5, 0.8, 40000, 400,
            64, 80, steps=False, test=('soft_nms', 0.0, -1), maskness=True,
            ema=True),
    'eva02-l-p16_cascade-mask-rcnn_o365-pre_lsj-1536_lvis-v1':
    _recipe('l', 1536, 16, L_GLOBAL_8, 0.3, True, 4e-5, 0.8, 70000, 700,
            64, 1203, steps=False, test=('soft_nms', 0.02, -1),
            maskness=True, ema=True, max_dets=1000),
}


def test_every_eva02_config_is_covered() -> None:
    assert {p.stem for p in CONFIG_DIR.glob('eva02-*.py')} == set(RECIPES)


# -- the official EVA-02 detector layout ---------------------------------


def official_eva02_shapes(dim: int, depth: int, heads: int, mlp: int,
                          window: int, global_blocks: Sequence[int],
                          img: int, num_classes: int, **kwargs) -> dict:
    """Names and shapes of a released EVA-02 detector's state dict.

    The ViT as vit.py builds it for the eva2_* configs (separate q/k/v
    projections without bias plus q_bias/v_bias, vit.py:88-97; SwiGLU
    w1/w2/ffn_ln/w3 with subln=True, vit.py:42-66, 247-252; abs pos_embed
    for 224 px with a cls position, vit.py:358-362; persistent RoPE
    buffers rope_win/rope_glb, also under each block's attn.rope,
    vit.py:370-395; no rel-pos tables, no cls token, no final norm). The
    pyramid, RPN and heads are EVA-01's (test_official_det_converter.py's
    official_shapes; the configs' common/models are unchanged).
    """
    shapes = official_shapes(dim, 0, heads, mlp, window, (), img,
                             num_classes, **kwargs)
    head_dim, grid = dim // heads, img // PATCH
    for name, side in (('rope_win', window), ('rope_glb', grid)):
        for buffer in ('freqs_cos', 'freqs_sin'):
            shapes[f'backbone.net.{name}.{buffer}'] = (side * side, head_dim)
    for i in range(depth):
        block = f'backbone.net.blocks.{i}.'
        side = grid if i in global_blocks else window
        for name in ('q_proj', 'k_proj', 'v_proj'):
            shapes[block + f'attn.{name}.weight'] = (dim, dim)
        for name, shape in (('norm1.weight', (dim, )),
                            ('norm1.bias', (dim, )),
                            ('attn.q_bias', (dim, )),
                            ('attn.v_bias', (dim, )),
                            ('attn.rope.freqs_cos', (side * side, head_dim)),
                            ('attn.rope.freqs_sin', (side * side, head_dim)),
                            ('attn.proj.weight', (dim, dim)),
                            ('attn.proj.bias', (dim, )),
                            ('norm2.weight', (dim, )),
                            ('norm2.bias', (dim, )),
                            ('mlp.w1.weight', (mlp, dim)),
                            ('mlp.w1.bias', (mlp, )),
                            ('mlp.w2.weight', (mlp, dim)),
                            ('mlp.w2.bias', (mlp, )),
                            ('mlp.ffn_ln.weight', (mlp, )),
                            ('mlp.ffn_ln.bias', (mlp, )),
                            ('mlp.w3.weight', (dim, mlp)),
                            ('mlp.w3.bias', (dim, ))):
            shapes[block + name] = shape
    return shapes


def random_official(num_classes: int, seed: int = 0,
                    **kwargs) -> Dict[str, torch.Tensor]:
    """Random weights in the official layout; RoPE buffers as vit.py
    computes them."""
    generator = torch.Generator().manual_seed(seed)
    shapes = official_eva02_shapes(DIM, DEPTH, HEADS, MLP, WINDOW, GLOBAL,
                                   IMG, num_classes, fpn=FPN, fc=FC,
                                   **kwargs)
    source = {
        key: torch.randn(shape, generator=generator) * 0.2
        for key, shape in shapes.items()
    }
    for key in source:
        if '.freqs_' in key:
            side = math.isqrt(source[key].shape[0])
            source[key] = official_rope(DIM // HEADS, side)[key[-9:]]
    return source


def shrunk(name: str, num_classes: Optional[int] = None) -> Config:
    """An EVA-02 detection config at the EVA-01 converter tests' toy
    widths, with the EVA-02 options."""
    cfg = eva01_shrunk(CONFIG_DIR / f'{name}.py', num_classes)
    cfg.model.backbone.update(swiglu_mlp=True, scale_mlp=True,
                              use_rot_pos_emb=True, ref_feat_shape=16)
    return cfg


# official-det's test helper, for the EVA-02 format.
convert = partial(eva01_convert, src_format='official-eva02-det')


def official_vit(source: Dict[str, torch.Tensor],
                 image: torch.Tensor) -> torch.Tensor:
    """vit.py's ViT.forward from the source tensors (xattn=False path)."""
    p = {k[len('backbone.net.'):]: v for k, v in source.items()
         if k.startswith('backbone.net.')}
    x = F.conv2d(image, p['patch_embed.proj.weight'],
                 p['patch_embed.proj.bias'], stride=PATCH)
    b, c, h, w = x.shape
    pos = official_pos_embed(p['pos_embed'], h).reshape(1, h, w, c)
    x = x.permute(0, 2, 3, 1) + pos
    for i in range(DEPTH):
        q = f'blocks.{i}.'
        shortcut = x
        x = F.layer_norm(x, (c, ), p[q + 'norm1.weight'],
                         p[q + 'norm1.bias'], eps=1e-6)
        win = 0 if i in GLOBAL else WINDOW
        if win:  # window_partition: h, w are multiples of the window here
            x = x.view(b, h // win, win, w // win, win, c).permute(
                0, 1, 3, 2, 4, 5).reshape(-1, win, win, c)
        out = official_attention(x.reshape(x.shape[0], -1, c),
                                 source, 'backbone.net.' + q,
                                 HEADS).reshape(x.shape)
        if win:
            out = out.view(b, h // win, w // win, win, win, c).permute(
                0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
        x = shortcut + out
        x = x + official_swiglu_branch(x, source, 'backbone.net.' + q)
    return x.permute(0, 3, 1, 2)


COCO_1536 = 'eva02-l-p16_cascade-mask-rcnn_lsj-1536_coco'


def test_converts_loads_strictly_and_computes_as_official(
        tmp_path: Path) -> None:
    source = random_official(80)
    cfg = shrunk(COCO_1536)
    config = dump_config(cfg, tmp_path / 'coco_tiny.py')
    conversion = convert(source, config)
    check_fits_config(conversion.state_dict, str(config))
    model = build(cfg)
    result = model.load_state_dict(conversion.state_dict, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    state = model.state_dict()
    # The RoPE buffers, and only they, are dropped.
    rope = {k for k in source if '.freqs_' in k}
    assert set(conversion.dropped) == rope and len(rope) == 4 + 2 * DEPTH
    # Every other source tensor lands unchanged, q/k/v as one tensor.
    net = 'backbone.net.blocks.2.'
    torch.testing.assert_close(
        state['backbone.blocks.2.attn.qkv.weight'],
        torch.cat([source[net + f'attn.{n}_proj.weight'] for n in 'qkv']),
        rtol=0, atol=0)
    for src, dst in (('mlp.w1.weight', 'mlp.fc1_g.weight'),
                     ('mlp.w2.bias', 'mlp.fc1_x.bias'),
                     ('mlp.ffn_ln.weight', 'mlp.norm.weight'),
                     ('mlp.w3.weight', 'mlp.fc2.weight'),
                     ('attn.q_bias', 'attn.q_bias'),
                     ('attn.v_bias', 'attn.v_bias')):
        assert torch.equal(state['backbone.blocks.2.' + dst],
                           source[net + src]), src
    model_values = sorted(
        float(v.double().sum()) for k, v in state.items()
        if k != 'backbone.pos_embed')
    # q, k and v, fused, count as one tensor.
    source_values = fused_value_sums({
        k: v for k, v in source.items()
        if k not in rope and k != 'backbone.net.pos_embed'
    })
    assert model_values == pytest.approx(source_values, abs=1e-9)
    torch.testing.assert_close(
        state['backbone.pos_embed'],
        official_pos_embed(source['backbone.net.pos_embed'], IMG // PATCH),
        rtol=0, atol=1e-6)
    # The feature map as the official ViT computes it.
    image = torch.randn(1, 3, IMG, IMG, generator=torch.Generator()
                        .manual_seed(3))
    with torch.no_grad():
        ours = model.backbone(image)[0]
    torch.testing.assert_close(ours, official_vit(source, image), rtol=1e-4,
                               atol=1e-5)


def test_lvis_and_objects365_layouts(tmp_path: Path) -> None:
    """LVIS (federated-loss weights dropped) and the box-only Objects365
    detector convert into their configs."""
    for name, classes, kwargs in (
            ('eva02-l-p16_cascade-mask-rcnn_lsj-1024_lvis-v1', 7,
             dict(fed_loss=True)),
            ('eva02-l-p16_cascade-rcnn_lsj-1536_objects365', 9,
             dict(with_mask=False))):
        source = random_official(classes, **kwargs)
        cfg = shrunk(name, classes)
        config = dump_config(cfg, tmp_path / f'{name}.py')
        conversion = convert(source, config)
        result = build(cfg).load_state_dict(conversion.state_dict)
        assert not result.missing_keys and not result.unexpected_keys
        fed = [k for k in source if k.endswith('fed_loss_cls_weights')]
        assert len(fed) == (3 if 'lvis' in name else 0)
        assert set(fed) < set(conversion.dropped)
        assert conversion.meta['with_mask'] == ('lvis' in name)


def test_wrong_files_fail_clearly() -> None:
    from test_official_det_converter import random_official as eva01_det
    with pytest.raises(CheckpointError, match='use --src-format official'):
        convert(eva01_det(80), img_size=128)
    source = random_official(80)
    backbone = {k[len('backbone.net.'):]: v for k, v in source.items()
                if k.startswith('backbone.net.')}
    with pytest.raises(CheckpointError, match='official-eva02'):
        convert(backbone, img_size=128)
    source['backbone.net.blocks.0.attn.extra.weight'] = torch.zeros(1)
    with pytest.raises(CheckpointError, match='attn.extra'):
        convert(source, img_size=128)


# -- the paper configs ---------------------------------------------------


@pytest.mark.parametrize('name', sorted(RECIPES))
def test_config_builds_with_the_official_numbers(name: str) -> None:
    """Full size on the meta device: the official architecture, test
    settings, data sizes and schedule; the released checkpoints' full
    layout converts into exactly the model's keys and shapes."""
    cfg, want = load_config(CONFIG_DIR, name), RECIPES[name]
    dims, depth, heads, mlp = ARCHS[want['arch']]
    model = build_on_meta(cfg, MODELS)
    backbone = model.backbone
    grid = want['size'] // 16
    assert (backbone.embed_dims, len(backbone.blocks)) == (dims, depth)
    assert backbone.patch_embed.proj.weight.shape == (dims, 3, 16, 16)
    assert backbone.pos_embed.shape == (1, grid * grid, dims)
    assert backbone.cls_token is None and backbone.norm is None
    assert backbone.use_rot_pos_emb
    assert all(p.requires_grad for p in backbone.patch_embed.parameters())
    assert backbone.blocks[-1].drop_path.drop_prob == pytest.approx(
        want['drop_path'])
    assert backbone.with_cp == want['with_cp']
    assert [block.window_size for block in backbone.blocks] == [
        0 if i in want['global_blocks'] else want['window']
        for i in range(depth)
    ]
    vit = sum(p.numel() for n, p in backbone.named_parameters()
              if n != 'pos_embed')
    # EVA-02-L 304M, EVA-02-B 86M (EVA-02/det/README.md, #params).
    assert vit == pytest.approx(304e6 if want['arch'] == 'l' else 86e6,
                                rel=0.01)
    assert model.neck.in_channels == dims
    assert [head.num_classes for head in model.roi_head.bbox_head
            ] == [want['classes']] * 3
    assert type(model.roi_head).__name__ == 'Detectron2CascadeRoIHead'
    if 'objects365' in name:
        assert not model.roi_head.with_mask
    else:
        assert model.roi_head.mask_head.rescore_by_maskness == \
            want['maskness']
    rcnn = cfg.model.test_cfg.rcnn
    assert (rcnn.nms.type, rcnn.score_thr, rcnn.max_per_img) == want['test']
    if rcnn.nms.type == 'soft_nms':
        assert (rcnn.nms.iou_threshold, rcnn.nms.method) == (0.6, 'linear')
    else:
        assert rcnn.nms.iou_threshold == 0.5
    if want['max_dets']:
        assert cfg.test_evaluator.type == 'eva_mm.LVISMetric'
        assert cfg.test_evaluator.get('max_dets_per_image',
                                      300) == want['max_dets']

    train = {t.type: t for t in cfg.train_dataloader.dataset.pipeline}
    assert train['RandomResize'].scale == (want['size'], ) * 2
    assert train['eva_mm.Detectron2RandomCrop'].crop_size == \
        (want['size'], ) * 2
    test = {t.type: t for t in cfg.test_dataloader.dataset.pipeline}
    assert test['Resize'].scale == (want['size'], ) * 2
    assert cfg.model.data_preprocessor.pad_size_divisor == want['size']
    assert cfg.auto_scale_lr.base_batch_size == want['batch']

    assert cfg.train_cfg.max_iters == want['iters']
    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.type, optimizer.lr, optimizer.weight_decay) == (
        'AdamW', want['lr'], 0.1)
    paramwise = cfg.optim_wrapper.paramwise_cfg
    # optimizer.params.overrides = {}, weight_decay_norm = None: decay on
    # every parameter.
    assert (paramwise.layer_decay_rate, paramwise.no_decay_1d,
            paramwise.no_decay_names) == (want['decay'], False, ())
    warmup, *rest = cfg.param_scheduler
    assert (warmup.type, warmup.start_factor, warmup.end) == (
        'LinearLR', 0.001, want['warmup'])
    if want['steps']:
        iters = want['iters']
        assert [(s.type, s.milestones, s.gamma) for s in rest] == [
            ('MultiStepLR', [iters * 8 // 10, iters * 9 // 10], 0.1)
        ]
    else:
        assert rest == []  # constant after the warm-up
    hooks = [h for h in cfg.get('custom_hooks', []) if h.type == 'EMAHook']
    assert len(hooks) == int(want['ema'])
    if want['ema']:
        assert (hooks[0].momentum, hooks[0].update_buffers) == (1e-4, True)

    # The released checkpoints' layout, converted on the meta device.
    shapes = official_eva02_shapes(
        dims, depth, heads, mlp, want['window'], want['global_blocks'],
        want['size'], want['classes'], with_mask='objects365' not in name,
        fed_loss=bool(want['max_dets']))
    source = {k: torch.empty(s, device='meta') for k, s in shapes.items()}
    converted = convert(source, img_size=want['size']).state_dict
    assert {k: tuple(v.shape) for k, v in converted.items()} == {
        k: tuple(v.shape) for k, v in model.state_dict().items()
    }


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(RECIPES))
def test_paper_config_runs_shrunk(name: str, lvis_shapes: Path,
                                  tmp_path: Path) -> None:
    """One training iteration of the shrunk config (eva02-tiny)."""
    runner = shrunk_runner(name, lvis_shapes, tmp_path,
                           **{'model.backbone.arch': 'eva02-tiny'})
    assert runner.model.backbone.use_rot_pos_emb
    hub = train_one_iteration(runner,
                              runner.model.backbone.blocks[0].mlp.fc1_g.weight)
    if 'objects365' not in name:
        assert math.isfinite(hub.get_scalar('train/loss_mask').current())
    ema = [h for h in runner.hooks if type(h).__name__ == 'EMAHook']
    assert len(ema) == int(RECIPES[name]['ema'])
