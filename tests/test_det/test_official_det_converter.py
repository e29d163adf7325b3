"""--src-format official-det: the released EVA-01 detectron2 detectors.

Synthetic checkpoints in the official layout (names and shapes as
EVA-01/det/detectron2/modeling/{backbone/vit.py, proposal_generator/rpn.py,
roi_heads/{box_head,fast_rcnn,mask_head}.py} build them for the ViTDet/EVA
configs, random values, under ``'model'``) are converted and loaded strictly
into shrunk COCO and LVIS configs; every source tensor must land unchanged,
and the RPN outputs, the cascade class scores and the mask logits are
computed a second time the way detectron2 computes them (anchors, channel
order, background-last scores) from the source tensors.
"""
import importlib.util
import math
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.registry import init_default_scope

import eva_mm  # noqa: F401  (registers eva_mm.* for the configs)
from eva_mm.checkpoints.errors import CheckpointError, CheckpointMismatchError
from eva_mm.checkpoints.converters import SRC_FORMATS, check_fits_config

ROOT = Path(__file__).resolve().parents[2]
# The converter tool, loaded from its file (tools/ is no package).
_SPEC = importlib.util.spec_from_file_location(
    'convert_eva', ROOT / 'tools/model_converters/convert_eva.py')
convert_eva = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(convert_eva)
CONFIGS = ROOT / 'configs/detection'
COCO = CONFIGS / 'eva-g-p16_cascade-mask-rcnn_lsj-1280_coco.py'
LVIS = CONFIGS / 'eva-g-p16_cascade-mask-rcnn_lsj-1280_lvis-v1.py'
O365 = CONFIGS / 'eva-g-p16_cascade-rcnn_lsj-1024_objects365.py'
COCO_1536 = CONFIGS / 'eva-g-p16_cascade-mask-rcnn_lsj-1280_coco_test-1536.py'

# The shrunk detector: EVA's layout (windows + global blocks, decomposed
# rel-pos, a 4-level simple pyramid, 4conv1fc LN box heads, 4-conv mask
# head) at toy widths, trained at 128 px.
DIM, DEPTH, HEADS, MLP = 64, 4, 4, 96
WINDOW, GLOBAL = 4, (1, 3)
IMG, PATCH = 128, 16
FPN, FC = 32, 48


pytestmark = pytest.mark.registry_scope('mmdet')


def shrunk(config: Path, num_classes: Optional[int] = None) -> Config:
    """The paper config at toy widths (ground-truth file not needed)."""
    cfg = Config.fromfile(str(config))
    model = cfg.model
    model.backbone.update(
        arch=dict(embed_dims=DIM, num_layers=DEPTH, num_heads=HEADS,
                  mlp_hidden_dim=MLP),
        img_size=IMG, window_size=WINDOW, global_block_indexes=GLOBAL,
        with_cp=False)
    model.neck.update(in_channels=DIM, out_channels=FPN)
    model.rpn_head.update(in_channels=FPN, feat_channels=FPN)
    model.roi_head.bbox_roi_extractor.out_channels = FPN
    for head in model.roi_head.bbox_head:
        head.update(in_channels=FPN, conv_out_channels=FPN,
                    fc_out_channels=FC)
        if num_classes is not None:
            head.num_classes = num_classes
            if head.loss_cls.type == 'eva_mm.FederatedLoss':
                head.loss_cls.update(num_classes=num_classes, ann_file=None,
                                     class_freq=[1.0] * num_classes)
    if model.roi_head.get('mask_head'):
        model.roi_head.mask_roi_extractor.out_channels = FPN
        model.roi_head.mask_head.update(in_channels=FPN,
                                        conv_out_channels=FPN)
        if num_classes is not None:
            model.roi_head.mask_head.num_classes = num_classes
    return cfg


def vit_block_shapes(block: str, dim: int, heads: int, mlp: int,
                     side: int) -> Dict[str, tuple]:
    """One block of the official detection ViT (vit.py:160-250: qkv without
    bias plus q/v biases, decomposed rel-pos tables for a ``side`` x
    ``side`` window or grid, GELU MLP), its names under ``block``."""
    shapes = {
        'norm1.weight': (dim, ),
        'norm1.bias': (dim, ),
        'attn.q_bias': (dim, ),
        'attn.v_bias': (dim, ),
        'attn.qkv.weight': (3 * dim, dim),
        'attn.proj.weight': (dim, dim),
        'attn.proj.bias': (dim, ),
        'attn.rel_pos_h': (2 * side - 1, dim // heads),
        'attn.rel_pos_w': (2 * side - 1, dim // heads),
        'norm2.weight': (dim, ),
        'norm2.bias': (dim, ),
        'mlp.fc1.weight': (mlp, dim),
        'mlp.fc1.bias': (mlp, ),
        'mlp.fc2.weight': (dim, mlp),
        'mlp.fc2.bias': (dim, ),
    }
    return {block + key: shape for key, shape in shapes.items()}


def official_shapes(dim: int, depth: int, heads: int, mlp: int,
                    window: int, global_blocks: Sequence[int], img: int,
                    num_classes: int, fpn: int = 256, fc: int = 1024,
                    with_mask: bool = True,
                    fed_loss: bool = False) -> Dict[str, tuple]:
    """Names and shapes of an official EVA-01 detector's state dict.

    As the official modules build them: ViT(pretrain_img_size=224,
    pretrain_use_cls_token=True, beit_like_qkv_bias=True: qkv without bias)
    (vit.py:328-420), SimpleFeaturePyramid(scale_factors=(4, 2, 1, 0.5),
    norm='LN': convs without bias, '.norm' LayerNorms) (vit.py:490-546),
    StandardRPNHead(conv_dims=[-1, -1], 3 anchors) (rpn.py:62-117),
    FastRCNNConvFCHead(conv_dims=[256] * 4, fc_dims=[1024], conv_norm='LN')
    (box_head.py:52-84), FastRCNNOutputLayers(cls_agnostic_bbox_reg=True)
    (fast_rcnn.py:270-296) per stage, MaskRCNNConvUpsampleHead(
    conv_dims=[256] * 5, conv_norm='LN') (mask_head.py).
    """
    grid = img // PATCH
    shapes = {
        'backbone.net.patch_embed.proj.weight': (dim, 3, PATCH, PATCH),
        'backbone.net.patch_embed.proj.bias': (dim, ),
        'backbone.net.pos_embed': (1, (224 // PATCH)**2 + 1, dim),
    }
    for i in range(depth):
        side = grid if i in global_blocks else window
        shapes.update(vit_block_shapes(f'backbone.net.blocks.{i}.', dim,
                                       heads, mlp, side))

    def conv_ln(prefix: str, cout: int, cin: int, k: int) -> None:
        shapes[prefix + '.weight'] = (cout, cin, k, k)
        shapes[prefix + '.norm.weight'] = (cout, )
        shapes[prefix + '.norm.bias'] = (cout, )

    shapes.update({
        'backbone.simfp_2.0.weight': (dim, dim // 2, 2, 2),
        'backbone.simfp_2.0.bias': (dim // 2, ),
        'backbone.simfp_2.1.weight': (dim // 2, ),
        'backbone.simfp_2.1.bias': (dim // 2, ),
        'backbone.simfp_2.3.weight': (dim // 2, dim // 4, 2, 2),
        'backbone.simfp_2.3.bias': (dim // 4, ),
        'backbone.simfp_3.0.weight': (dim, dim // 2, 2, 2),
        'backbone.simfp_3.0.bias': (dim // 2, ),
    })
    for stage, first, cin in ((2, 4, dim // 4), (3, 1, dim // 2),
                              (4, 0, dim), (5, 1, dim)):
        conv_ln(f'backbone.simfp_{stage}.{first}', fpn, cin, 1)
        conv_ln(f'backbone.simfp_{stage}.{first + 1}', fpn, fpn, 3)
    rpn = 'proposal_generator.rpn_head.'
    for j in range(2):
        shapes[rpn + f'conv.conv{j}.weight'] = (fpn, fpn, 3, 3)
        shapes[rpn + f'conv.conv{j}.bias'] = (fpn, )
    shapes.update({
        rpn + 'objectness_logits.weight': (3, fpn, 1, 1),
        rpn + 'objectness_logits.bias': (3, ),
        rpn + 'anchor_deltas.weight': (12, fpn, 1, 1),
        rpn + 'anchor_deltas.bias': (12, ),
    })
    for k in range(3):
        for j in range(1, 5):
            conv_ln(f'roi_heads.box_head.{k}.conv{j}', fpn, fpn, 3)
        shapes[f'roi_heads.box_head.{k}.fc1.weight'] = (fc, fpn * 7 * 7)
        shapes[f'roi_heads.box_head.{k}.fc1.bias'] = (fc, )
        predictor = f'roi_heads.box_predictor.{k}.'
        shapes.update({
            predictor + 'cls_score.weight': (num_classes + 1, fc),
            predictor + 'cls_score.bias': (num_classes + 1, ),
            predictor + 'bbox_pred.weight': (4, fc),
            predictor + 'bbox_pred.bias': (4, ),
        })
        if fed_loss:
            shapes[predictor + 'fed_loss_cls_weights'] = (num_classes, )
    if with_mask:
        for j in range(1, 5):
            conv_ln(f'roi_heads.mask_head.mask_fcn{j}', fpn, fpn, 3)
        shapes.update({
            'roi_heads.mask_head.deconv.weight': (fpn, fpn, 2, 2),
            'roi_heads.mask_head.deconv.bias': (fpn, ),
            'roi_heads.mask_head.predictor.weight': (num_classes, fpn, 1, 1),
            'roi_heads.mask_head.predictor.bias': (num_classes, ),
        })
    return shapes


def random_official(num_classes: int, seed: int = 0,
                    **kwargs) -> Dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    shapes = official_shapes(DIM, DEPTH, HEADS, MLP, WINDOW, GLOBAL, IMG,
                             num_classes, FPN, FC, **kwargs)
    return {
        key: torch.randn(shape, generator=generator) * 0.2
        for key, shape in shapes.items()
    }


def convert(source: Dict[str, torch.Tensor], config: Optional[Path] = None,
            src_format: str = 'official-det', **options):
    args = convert_eva.parse_args(
        ['--src-format', src_format, 'src.pth', 'dst.pth'] +
        (['--config', str(config)] if config else []) +
        [f'--{k.replace("_", "-")}={v}' for k, v in options.items()])
    return SRC_FORMATS[src_format].convert(source, args)


def dump_config(cfg: Config, path: Path) -> Path:
    """Write ``cfg`` to ``path``, the file the converter's --config reads."""
    cfg.dump(str(path))
    return path


def build(cfg: Config) -> torch.nn.Module:
    init_default_scope('mmdet')
    return MODELS.build(cfg.model).eval()


def load_strict(cfg: Config, weights: Dict[str, torch.Tensor]):
    model = build(cfg)
    result = model.load_state_dict(weights, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    return model


def official_pos_embed(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
    """get_abs_pos (modeling/backbone/utils.py:166-189) for one grid."""
    size = math.isqrt(pos_embed.shape[1] - 1)
    table = pos_embed[:, 1:].reshape(1, size, size, -1).permute(0, 3, 1, 2)
    table = F.interpolate(table, size=(grid, grid), mode='bicubic',
                          align_corners=False)
    return table.permute(0, 2, 3, 1).reshape(1, grid * grid, -1)


def test_coco_converts_and_every_tensor_lands(tmp_path: Path) -> None:
    source = random_official(80)
    cfg = shrunk(COCO)
    # The shrunk config file: check_fits_config and the converter read it.
    config = dump_config(cfg, tmp_path / 'coco_tiny.py')
    conversion = convert(source, config)
    check_fits_config(conversion.state_dict, str(config))
    model = load_strict(cfg, conversion.state_dict)
    state = model.state_dict()
    assert conversion.meta['num_classes'] == 80
    assert conversion.meta['with_mask'] and not conversion.dropped
    # Every source tensor, found by its eva_mm name, unchanged.
    names = {
        'backbone.net.blocks.1.attn.rel_pos_h':
        'backbone.blocks.1.attn.rel_pos_h',
        'backbone.net.blocks.2.mlp.fc2.weight':
        'backbone.blocks.2.mlp.fc2.weight',
        'backbone.simfp_2.0.weight': 'neck.rescales.0.0.weight',
        'backbone.simfp_2.1.bias': 'neck.rescales.0.1.bias',
        'backbone.simfp_2.3.weight': 'neck.rescales.0.3.weight',
        'backbone.simfp_2.4.weight': 'neck.lateral_convs.0.conv.weight',
        'backbone.simfp_2.4.norm.weight': 'neck.lateral_convs.0.ln.weight',
        'backbone.simfp_2.5.norm.bias': 'neck.fpn_convs.0.ln.bias',
        'backbone.simfp_3.0.bias': 'neck.rescales.1.0.bias',
        'backbone.simfp_3.1.weight': 'neck.lateral_convs.1.conv.weight',
        'backbone.simfp_4.0.weight': 'neck.lateral_convs.2.conv.weight',
        'backbone.simfp_5.2.weight': 'neck.fpn_convs.3.conv.weight',
        'proposal_generator.rpn_head.conv.conv1.bias':
        'rpn_head.rpn_conv.1.conv.bias',
        'proposal_generator.rpn_head.objectness_logits.weight':
        'rpn_head.rpn_cls.weight',
        'proposal_generator.rpn_head.anchor_deltas.bias':
        'rpn_head.rpn_reg.bias',
        'roi_heads.box_head.2.conv4.norm.weight':
        'roi_head.bbox_head.2.shared_convs.3.ln.weight',
        'roi_heads.box_head.1.fc1.weight':
        'roi_head.bbox_head.1.shared_fcs.0.weight',
        'roi_heads.box_predictor.2.cls_score.weight':
        'roi_head.bbox_head.2.fc_cls.weight',
        'roi_heads.box_predictor.0.bbox_pred.bias':
        'roi_head.bbox_head.0.fc_reg.bias',
        'roi_heads.mask_head.mask_fcn1.weight':
        'roi_head.mask_head.convs.0.conv.weight',
        'roi_heads.mask_head.deconv.weight':
        'roi_head.mask_head.upsample.weight',
        'roi_heads.mask_head.predictor.bias':
        'roi_head.mask_head.conv_logits.bias',
    }
    for src, dst in names.items():
        assert torch.equal(state[dst], source[src]), src
    # All of them: the model holds each source tensor once (pos_embed,
    # resized, aside), so the multiset of values matches.
    model_values = sorted(
        float(v.double().sum()) for k, v in state.items()
        if k != 'backbone.pos_embed')
    source_values = sorted(
        float(v.double().sum()) for k, v in source.items()
        if k != 'backbone.net.pos_embed')
    assert model_values == pytest.approx(source_values, abs=0)
    assert len(state) == len(source)
    # The 14 x 14 + cls position embedding: the cls entry dropped and the
    # grid resized to 8 x 8 as get_abs_pos does at every forward.
    torch.testing.assert_close(
        state['backbone.pos_embed'],
        official_pos_embed(source['backbone.net.pos_embed'], IMG // PATCH),
        rtol=0, atol=1e-6)


def detectron2_anchors(sizes: Sequence[int], strides: Sequence[int],
                       shapes: Sequence[tuple]) -> list:
    """DefaultAnchorGenerator(sizes=[[32], ...], aspect_ratios=[0.5, 1, 2],
    offset=0.0): per level, (H * W * A, 4), A varying fastest."""
    out = []
    for size, stride, (h, w) in zip(sizes, strides, shapes):
        cell = []
        for ratio in (0.5, 1.0, 2.0):
            width = math.sqrt(size * size / ratio)
            height = ratio * width
            cell.append([-width / 2, -height / 2, width / 2, height / 2])
        cell = torch.tensor(cell)
        ys, xs = torch.meshgrid(torch.arange(h) * stride,
                                torch.arange(w) * stride, indexing='ij')
        shifts = torch.stack([xs, ys, xs, ys], dim=-1).reshape(-1, 1, 4)
        out.append((shifts + cell[None]).reshape(-1, 4))
    return out


def box2box_apply(deltas: torch.Tensor, boxes: torch.Tensor,
                  weights: Sequence[float]) -> torch.Tensor:
    """detectron2 Box2BoxTransform.apply_deltas (box_regression.py)."""
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    ctr_x = boxes[:, 0] + 0.5 * widths
    ctr_y = boxes[:, 1] + 0.5 * heights
    wx, wy, ww, wh = weights
    clamp = math.log(1000.0 / 16)
    dx, dy = deltas[:, 0] / wx, deltas[:, 1] / wy
    dw = (deltas[:, 2] / ww).clamp(max=clamp)
    dh = (deltas[:, 3] / wh).clamp(max=clamp)
    cx, cy = dx * widths + ctr_x, dy * heights + ctr_y
    w, h = torch.exp(dw) * widths, torch.exp(dh) * heights
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w,
                        cy + 0.5 * h], dim=1)


def ln2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor):
    """detectron2's channels-first LayerNorm (layers/batch_norm.py)."""
    mean = x.mean(1, keepdim=True)
    var = (x - mean).pow(2).mean(1, keepdim=True)
    x = (x - mean) / torch.sqrt(var + 1e-6)
    return weight[:, None, None] * x + bias[:, None, None]


def conv_ln_relus(x: torch.Tensor, source: Dict[str, torch.Tensor],
                  convs: Sequence[str]) -> torch.Tensor:
    """detectron2's Conv2d(bias=False, norm='LN') + ReLU, conv by conv."""
    for conv in convs:
        x = F.conv2d(x, source[conv + '.weight'], padding=1)
        x = F.relu(ln2d(x, source[conv + '.norm.weight'],
                        source[conv + '.norm.bias']))
    return x


def test_outputs_match_detectron2_computation(tmp_path: Path) -> None:
    """RPN proposals' scores/boxes, class scores and masks computed twice."""
    num_classes = 5
    source = random_official(num_classes, seed=1)
    # Deltas of trained magnitude: mmdet also clamps dw, dh from below at
    # -log(1000 / 16), detectron2 only from above (checked below).
    source['proposal_generator.rpn_head.anchor_deltas.weight'] *= 0.1
    cfg = shrunk(COCO, num_classes)
    config = dump_config(cfg, tmp_path / 'coco5.py')
    model = load_strict(cfg, convert(source, config).state_dict)
    torch.manual_seed(0)
    feats = [torch.randn(1, FPN, s, s) for s in (32, 16, 8, 4, 2)]

    # RPN: detectron2's StandardRPNHead, then its (N, A, H, W) ->
    # (N, H * W * A) flattening and Box2BoxTransform(1, 1, 1, 1) on its
    # anchors; mmdet's head, AnchorGenerator and coder on the same maps.
    rpn = 'proposal_generator.rpn_head.'
    strides = (4, 8, 16, 32, 64)
    anchors = detectron2_anchors((32, 64, 128, 256, 512), strides,
                                 [f.shape[-2:] for f in feats])
    cls_scores, bbox_preds = model.rpn_head(tuple(feats))
    mm_anchors = model.rpn_head.prior_generator.grid_priors(
        [f.shape[-2:] for f in feats], device='cpu')
    for level, x in enumerate(feats):
        for j in range(2):
            x = F.relu(F.conv2d(x, source[rpn + f'conv.conv{j}.weight'],
                                source[rpn + f'conv.conv{j}.bias'],
                                padding=1))
        logits = F.conv2d(x, source[rpn + 'objectness_logits.weight'],
                          source[rpn + 'objectness_logits.bias'])
        deltas = F.conv2d(x, source[rpn + 'anchor_deltas.weight'],
                          source[rpn + 'anchor_deltas.bias'])
        h, w = x.shape[-2:]
        logits = logits.permute(0, 2, 3, 1).reshape(-1)
        deltas = deltas.view(1, 3, 4, h, w).permute(0, 3, 4, 1, 2).reshape(
            -1, 4)
        assert deltas[:, 2:].min() > -math.log(1000 / 16)
        boxes = box2box_apply(deltas, anchors[level], (1, 1, 1, 1))
        torch.testing.assert_close(mm_anchors[level], anchors[level])
        mm_logits = cls_scores[level].permute(0, 2, 3, 1).reshape(-1)
        mm_deltas = bbox_preds[level].permute(0, 2, 3, 1).reshape(-1, 4)
        mm_boxes = model.rpn_head.bbox_coder.decode(mm_anchors[level],
                                                    mm_deltas)
        torch.testing.assert_close(mm_logits, logits, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(mm_boxes, boxes, rtol=1e-5, atol=1e-4)

    # Box heads: 4 x (conv without bias, LN, ReLU), flatten, fc1 + ReLU,
    # then cls_score -> softmax with the background last, and the
    # class-agnostic deltas decoded with BBOX_REG_WEIGHTS.
    rois = torch.randn(6, FPN, 7, 7)
    boxes = torch.tensor([[10., 12., 60., 50.]]).repeat(6, 1)
    for k, weights in enumerate([(10, 10, 5, 5), (20, 20, 10, 10),
                                 (30, 30, 15, 15)]):
        x = conv_ln_relus(
            rois, source,
            [f'roi_heads.box_head.{k}.conv{j}' for j in range(1, 5)])
        x = F.relu(F.linear(x.flatten(1),
                            source[f'roi_heads.box_head.{k}.fc1.weight'],
                            source[f'roi_heads.box_head.{k}.fc1.bias']))
        predictor = f'roi_heads.box_predictor.{k}.'
        probs = F.softmax(F.linear(x, source[predictor + 'cls_score.weight'],
                                   source[predictor + 'cls_score.bias']), -1)
        deltas = F.linear(x, source[predictor + 'bbox_pred.weight'],
                          source[predictor + 'bbox_pred.bias'])
        head = model.roi_head.bbox_head[k]
        mm_cls, mm_reg = head(rois)
        torch.testing.assert_close(F.softmax(mm_cls, -1), probs, rtol=1e-5,
                                   atol=1e-6)
        torch.testing.assert_close(
            head.bbox_coder.decode(boxes, mm_reg),
            box2box_apply(deltas, boxes, weights), rtol=1e-5, atol=1e-4)

    # Mask head: 4 x (conv, LN, ReLU), deconv + ReLU, 1x1 predictor with one
    # map per class.
    x = torch.randn(3, FPN, 14, 14)
    y = conv_ln_relus(
        x, source, [f'roi_heads.mask_head.mask_fcn{j}' for j in range(1, 5)])
    y = F.relu(F.conv_transpose2d(y, source['roi_heads.mask_head.deconv.'
                                            'weight'],
                                  source['roi_heads.mask_head.deconv.bias'],
                                  stride=2))
    y = F.conv2d(y, source['roi_heads.mask_head.predictor.weight'],
                 source['roi_heads.mask_head.predictor.bias'])
    torch.testing.assert_close(model.roi_head.mask_head(x), y, rtol=1e-5,
                               atol=1e-5)


def test_lvis_drops_only_the_fed_loss_weights(tmp_path: Path) -> None:
    source = random_official(7, seed=2, fed_loss=True)
    cfg = shrunk(LVIS, 7)
    config = dump_config(cfg, tmp_path / 'lvis7.py')
    conversion = convert(source, config)
    assert conversion.dropped == [
        f'roi_heads.box_predictor.{k}.fed_loss_cls_weights'
        for k in range(3)
    ]
    model = load_strict(cfg, conversion.state_dict)
    assert len(model.state_dict()) == len(source) - 3
    assert torch.equal(model.roi_head.bbox_head[1].fc_cls.weight,
                       source['roi_heads.box_predictor.1.cls_score.weight'])


def test_objects365_without_mask_head(tmp_path: Path) -> None:
    source = random_official(9, seed=3, with_mask=False)
    cfg = shrunk(O365, 9)
    conversion = convert(source, img_size=IMG)
    assert not conversion.meta['with_mask']
    load_strict(cfg, conversion.state_dict)


def test_global_rel_pos_resized_for_another_size() -> None:
    """1280 px tables into a 1536 px model: 'beit' from the option."""
    from eva_mm.models.layers.pos_embed import resize_rel_pos
    source = random_official(3, seed=4)
    conversion = convert(source, img_size=2 * IMG, rel_pos_resize='beit')
    weights = conversion.state_dict
    grid = 2 * IMG // PATCH
    for i in range(DEPTH):
        table = weights[f'backbone.blocks.{i}.attn.rel_pos_w']
        src = source[f'backbone.net.blocks.{i}.attn.rel_pos_w']
        if i in GLOBAL:
            assert table.shape[0] == 2 * grid - 1
            torch.testing.assert_close(
                table, resize_rel_pos(src, 2 * grid - 1, 'beit'))
        else:
            assert torch.equal(table, src)


def test_objects365_tables_of_another_grid_start_at_zero(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """An Objects365-layout file trained at IMG, for a detector at 2 x IMG
    (eva_o365.pth into the 1280 px configs): by default its global rel-pos
    tables become zeros, which is what the official fine-tuning starts from
    (its loader skips tensors of another shape, c2_model_loading.py:263-275,
    and the tables keep their zero init); --rel-pos-resize resizes them."""
    from eva_mm.models.layers.pos_embed import resize_rel_pos
    source = random_official(9, seed=5, with_mask=False)
    size = 2 * IMG
    cfg = shrunk(O365, 9)
    cfg.model.backbone.img_size = size
    conversion = convert(source, img_size=size)
    load_strict(cfg, conversion.state_dict)

    # The official fine-tuning's start, recomputed: a fresh official model
    # for 2 x IMG (rel-pos tables zero-initialised) loads every source
    # tensor of its own shape and skips the others; converted, it must be
    # the same weights.
    target = official_shapes(DIM, DEPTH, HEADS, MLP, WINDOW, GLOBAL, size, 9,
                             FPN, FC, with_mask=False)
    skipped = sorted(key for key, shape in target.items()
                     if source[key].shape != shape)
    assert skipped == sorted(
        f'backbone.net.blocks.{i}.attn.rel_pos_{axis}'
        for i in GLOBAL for axis in 'hw')
    started = {
        key: torch.zeros(shape) if key in skipped else source[key]
        for key, shape in target.items()
    }
    expected = convert(started, img_size=size).state_dict
    assert set(conversion.state_dict) == set(expected)
    for key, value in expected.items():
        assert torch.equal(conversion.state_dict[key], value), key
    assert any('re-initialised to zeros' in line and str(list(GLOBAL)) in line
               for line in conversion.report)

    # The resize instead, as an option.
    grid = size // PATCH
    resized = convert(source, img_size=size, rel_pos_resize='linear')
    load_strict(cfg, resized.state_dict)
    for key in skipped:
        torch.testing.assert_close(
            resized.state_dict[key.replace('backbone.net.', 'backbone.')],
            resize_rel_pos(source[key], 2 * grid - 1, 'linear'))
    assert not any('zeros' in line for line in resized.report)

    # The tool says so.
    src = tmp_path / 'eva_o365.pth'
    torch.save({'model': source}, src)
    convert_eva.main(['--src-format', 'official-det', str(src),
                      str(tmp_path / 'out.pth'), '--img-size', str(size)])
    assert 're-initialised to zeros' in capsys.readouterr().out


def test_wrong_files_fail_clearly(tmp_path: Path) -> None:
    source = random_official(80)
    # A backbone-only / MIM checkpoint.
    backbone = {
        k[len('backbone.net.'):]: v
        for k, v in source.items() if k.startswith('backbone.net.')
    }
    with pytest.raises(CheckpointError, match='--src-format official'):
        convert(backbone, img_size=IMG)
    # A segmentation checkpoint (mmseg names).
    seg = {'backbone.blocks.0.attn.qkv.weight': torch.zeros(3, 1),
           'decode_head.conv_seg.weight': torch.zeros(1)}
    with pytest.raises(CheckpointError, match='not an EVA-01 detectron2'):
        convert(seg, img_size=IMG)
    # A class count that does not fit the config.
    config = dump_config(shrunk(LVIS, 7), tmp_path / 'lvis.py')
    with pytest.raises(CheckpointError, match='80 classes.*num_classes=7'):
        convert(source, config)
    # A key of some other model part.
    extra = dict(source, **{'roi_heads.keypoint_head.fc.weight':
                            torch.zeros(1)})
    with pytest.raises(CheckpointError, match='keypoint_head'):
        convert(extra, img_size=IMG)
    # No size to resize to.
    with pytest.raises(CheckpointError, match='--img-size'):
        convert(source)


def test_cli_writes_only_fitting_results(tmp_path: Path) -> None:
    src = tmp_path / 'eva_coco_det.pth'
    torch.save({'model': random_official(80), 'iteration': 1}, src)
    config = dump_config(shrunk(COCO), tmp_path / 'coco_tiny.py')
    dst = tmp_path / 'out.pth'
    convert_eva.main(['--src-format', 'official-det', str(src), str(dst),
                      '--config', str(config)])
    saved = torch.load(dst, weights_only=True)
    assert saved['meta']['src_format'] == 'official-det'
    load_strict(shrunk(COCO), saved['state_dict'])
    # The LVIS config does not fit: an error, nothing written.
    bad = tmp_path / 'bad.pth'
    lvis = dump_config(shrunk(LVIS, 7), tmp_path / 'lvis.py')
    with pytest.raises(SystemExit, match='num_classes=7'):
        convert_eva.main(['--src-format', 'official-det', str(src),
                          str(bad), '--config', str(lvis)])
    assert not bad.exists()


@pytest.mark.parametrize('config, num_classes, img, fed_loss', [
    (COCO, 80, 1280, False),
    (LVIS, 1203, 1280, True),
    (COCO_1536, 80, 1280, False),
])
def test_full_size_layout_fits_the_paper_configs(config: Path,
                                                 num_classes: int, img: int,
                                                 fed_loss: bool) -> None:
    """The released checkpoints' full layout (EVA-g, 1280 px training) fits
    the paper configs key for key and shape for shape (meta tensors)."""
    shapes = official_shapes(1408, 40, 16, 6144, 16, tuple(range(3, 40, 4)),
                             img, num_classes, fed_loss=fed_loss)
    source = {k: torch.empty(s, device='meta') for k, s in shapes.items()}
    conversion = convert(source, config)
    check_fits_config(conversion.state_dict, str(config))
    if config == COCO_1536:
        # 96 x 96 tokens at 1536 px: the tables follow.
        assert conversion.state_dict[
            'backbone.blocks.3.attn.rel_pos_h'].shape == (191, 88)
    with pytest.raises(CheckpointMismatchError):
        check_fits_config(conversion.state_dict, str(O365))


def test_beit_resize_is_exact_for_cubics() -> None:
    """The not-a-knot cubic spline reproduces a cubic exactly: a table that
    is a cubic of EVA's geometric offsets resizes to that cubic at the new
    integer offsets (utils.py:97-115's construction, by hand)."""
    from eva_mm.models.layers.pos_embed import resize_rel_pos
    src_len, dst_len = 31, 41
    q = 1.0903078
    dis, cur = [], 1.0
    for i in range(src_len // 2):
        dis.append(cur)
        cur += q**(i + 1)
    x = np.array([-d for d in reversed(dis)] + [0.0] + dis)
    coeffs = np.array([[0.5, -1.0], [0.02, 0.3], [-0.01, 0.002],
                       [0.0003, -0.0001]])  # (power, channel)
    table = sum(coeffs[p] * x[:, None]**p for p in range(4))
    resized = resize_rel_pos(torch.tensor(table, dtype=torch.float64),
                             dst_len, 'beit')
    dx = np.arange(-(dst_len // 2), dst_len // 2 + 1, dtype=float)
    expected = sum(coeffs[p] * dx[:, None]**p for p in range(4))
    np.testing.assert_allclose(resized.numpy(), expected, atol=1e-9)
    # Linear stays the default.
    table32 = torch.randn(31, 4)
    assert not torch.allclose(resize_rel_pos(table32, 41),
                              resize_rel_pos(table32, 41, 'beit'))
