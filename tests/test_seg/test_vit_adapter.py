"""EVAViTAdapter and its ViT-Adapter layers.

A 4-block, 64-wide EVAViT keeps every model test well under a second on the
CPU; deformable attention runs mmcv's PyTorch path there, and is checked
against a bilinear sampler written out by hand.
"""
import copy
import math
from typing import Dict, List

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import ConfigDict
from mmengine.model import revert_sync_batchnorm
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope
from mmseg.registry import MODELS as MMSEG_MODELS

import eva_mm  # noqa: F401  (registers eva_mm.* in the mmengine registries)
from eva_mm.models import EVAViT, EVAViTAdapter
from eva_mm.models.backbones.eva_vit_adapter import default_interaction_indexes
from eva_mm.models.layers import Extractor, Injector, deform_inputs

DIM, DEPTH = 64, 4
TINY = dict(embed_dims=DIM, num_layers=DEPTH, num_heads=4,
            mlp_hidden_dim=128)
ADAPTER_PREFIXES = ('spm.', 'interactions.', 'level_embed', 'up.', 'norm1.',
                    'norm2.', 'norm3.', 'norm4.')


def tiny_adapter(**kwargs) -> EVAViTAdapter:
    """A tiny EVAViTAdapter on 64 px images, BN instead of SyncBN."""
    kwargs.setdefault('img_size', 64)
    kwargs.setdefault('patch_size', 16)
    kwargs.setdefault('deform_num_heads', 4)
    kwargs.setdefault('conv_inplane', 8)
    kwargs.setdefault('norm_cfg', dict(type='BN'))
    return EVAViTAdapter(arch=TINY, **kwargs)


def random_loss(outs: List[torch.Tensor]) -> torch.Tensor:
    # Batch-normalised maps have a fixed sum and sum of squares, whose
    # gradients vanish; a random projection does not.
    gen = torch.Generator().manual_seed(1)
    return sum((out * torch.randn(out.shape, generator=gen)).sum()
               for out in outs)


@pytest.mark.parametrize('size,kwargs', [
    ((64, 64), {}),
    ((96, 128), {}),
    ((128, 64), dict(with_cls_token=False)),
    ((64, 96), dict(patch_size=8)),
    # The official EVA-01 seg ViT options, away from the learned grid.
    ((96, 128), dict(rel_pos='bias', layer_scale_init_value=1.0)),
])
def test_output_shapes(size, kwargs) -> None:
    torch.manual_seed(0)
    model = tiny_adapter(**kwargs).eval()
    h, w = size
    with torch.no_grad():
        outs = model(torch.randn(2, 3, h, w))
    assert [tuple(out.shape) for out in outs] == [
        (2, DIM, h // s, w // s) for s in (4, 8, 16, 32)
    ]
    assert all(torch.isfinite(out).all() for out in outs)


def test_input_size_not_multiple_of_32_names_the_fix() -> None:
    model = tiny_adapter().eval()
    with pytest.raises(ValueError,
                       match=r'80x64.*size_divisor=32.*test_cfg=dict'):
        model(torch.randn(1, 3, 80, 64))


def test_interaction_indexes() -> None:
    assert default_interaction_indexes(40) == [[0, 9], [10, 19], [20, 29],
                                               [30, 39]]
    assert default_interaction_indexes(12) == [[0, 2], [3, 5], [6, 8],
                                               [9, 11]]
    assert default_interaction_indexes(6) == [[0, 0], [1, 2], [3, 3], [4, 5]]
    assert tiny_adapter(interaction_indexes=[[0, 1], [2, 2], [3, 3]],
                        add_vit_feature=False).interaction_indexes == [
                            [0, 1], [2, 2], [3, 3]]
    with pytest.raises(ValueError, match='every block must run'):
        tiny_adapter(interaction_indexes=[[0, 0], [1, 1], [2, 2]],
                     add_vit_feature=False)
    with pytest.raises(ValueError, match='follow each other'):
        tiny_adapter(interaction_indexes=[[0, 0], [2, 2], [3, 3], [1, 1]])
    with pytest.raises(ValueError, match='needs 4 interaction ranges'):
        tiny_adapter(interaction_indexes=[[0, 1], [2, 3]])


def msda_params(dim: int, heads: int, levels: int, points: int,
                ratio: float) -> int:
    value = int(dim * ratio)
    return (dim * heads * levels * points * 3 + heads * levels * points * 3
            + dim * value + value + value * dim + dim)


def expected_adapter_params(dim: int, inplane: int, heads: int, points: int,
                            ratio: float, cffn_ratio: float,
                            num_interactions: int) -> int:
    """Parameters ViT-Adapter adds to the ViT, counted part by part."""
    def conv_bn(cin: int, cout: int) -> int:
        return cin * cout * 9 + 2 * cout

    spm = (conv_bn(3, inplane) + 2 * conv_bn(inplane, inplane)
           + conv_bn(inplane, 2 * inplane) + conv_bn(2 * inplane, 4 * inplane)
           + conv_bn(4 * inplane, 4 * inplane)
           + (inplane + 2 * inplane + 4 * inplane + 4 * inplane) * dim
           + 4 * dim)
    layer_norm = 2 * dim
    injector = 2 * layer_norm + msda_params(dim, heads, 3, points,
                                            ratio) + dim
    hidden = int(dim * cffn_ratio)
    cffn = dim * hidden + hidden + hidden * 9 + hidden + hidden * dim + dim
    extractor = 3 * layer_norm + msda_params(dim, heads, 1, points,
                                             ratio) + cffn
    return (3 * dim + spm + num_interactions * injector
            + (num_interactions + 2) * extractor
            + dim * dim * 4 + dim  # up
            + 4 * 2 * dim)  # output norms


def test_giant_builds_on_meta_with_official_settings() -> None:
    with torch.device('meta'):
        model = EVAViTAdapter()
        vit = EVAViT(arch='giant', img_size=896, patch_size=16,
                     out_type='featmap', final_norm=False)
    assert model.interaction_indexes == [[0, 9], [10, 19], [20, 29],
                                         [30, 39]]
    assert (model.embed_dims, model.patch_size, model.num_extra_tokens) == (
        1408, 16, 1)
    attn = model.interactions[0].injector.attn
    assert (attn.num_heads, attn.num_points, attn.num_levels) == (16, 4, 3)
    assert attn.value_proj.out_features == 704  # deform_ratio 0.5
    assert model.interactions[3].extra_extractors is not None
    assert model.interactions[2].extra_extractors is None
    assert model.interactions[0].extractor.ffn.fc1.out_features == 352
    assert isinstance(model.norm1, nn.SyncBatchNorm)

    params = dict(model.named_parameters())
    vit_params = dict(vit.named_parameters())
    assert {k: v.shape for k, v in params.items() if k in vit_params} == {
        k: v.shape for k, v in vit_params.items()
    }
    adapter = sum(v.numel() for k, v in params.items() if k not in vit_params)
    assert adapter == expected_adapter_params(1408, 64, 16, 4, 0.5, 0.25, 4)
    assert all(k.startswith(ADAPTER_PREFIXES) for k in params
               if k not in vit_params)
    # ViT-g is the 1.0B model of the paper; the adapter adds about 4%.
    total = sum(v.numel() for v in params.values())
    assert 1.0e9 < total < 1.1e9 and 3e7 < adapter < 5e7


def bilinear(level: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """Sample (C, H, W) at pixel coordinates (x, y), zeros outside."""
    _, h, w = level.shape
    x0, y0 = math.floor(x), math.floor(y)
    out = torch.zeros(level.shape[0], dtype=level.dtype)
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                out += wy * wx * level[:, yy, xx]
    return out


def test_injector_deformable_attention_matches_hand_computation() -> None:
    torch.manual_seed(0)
    dim, heads, points, gamma = 4, 2, 2, 0.5
    vit_shape, level_shapes = (4, 4), [(8, 8), (4, 4), (2, 2)]
    injector = Injector(dim, heads, points, deform_ratio=1.0,
                        init_values=gamma).double().eval()
    attn = injector.attn
    # Offsets (in pixels of each level) and logits that do not depend on
    # the query: zero weights, chosen biases.
    offsets = torch.zeros(heads, 3, points, 2, dtype=torch.float64)
    offsets[:, :, 1] = torch.tensor([1.0, -0.5])
    offsets[1, :, 0] = torch.tensor([0.25, 0.75])
    logits = torch.randn(heads, 3 * points, dtype=torch.float64)
    with torch.no_grad():
        attn.sampling_offsets.weight.zero_()
        attn.sampling_offsets.bias.copy_(offsets.flatten())
        attn.attention_weights.weight.zero_()
        attn.attention_weights.bias.copy_(logits.flatten())
        for proj in (attn.value_proj, attn.output_proj):
            proj.weight.copy_(torch.eye(dim))
            proj.bias.zero_()

    query = torch.randn(1, 16, dim, dtype=torch.float64)
    feat = torch.randn(1, 64 + 16 + 4, dim, dtype=torch.float64)
    inputs, _ = deform_inputs(vit_shape, level_shapes, query.device)
    with torch.no_grad():
        out = injector(query, feat, inputs)

    value = F.layer_norm(feat, (dim, ), eps=1e-6)[0]
    levels = [
        chunk.t().reshape(dim, h, w) for chunk, (h, w) in zip(
            value.split([h * w for h, w in level_shapes]), level_shapes)
    ]
    weights = logits.softmax(-1).view(heads, 3, points)
    head_dim = dim // heads
    expected = torch.zeros(16, dim, dtype=torch.float64)
    for q in range(16):
        # Reference point: the centre of the query's patch, in [0, 1].
        ref_x, ref_y = (q % 4 + 0.5) / 4, (q // 4 + 0.5) / 4
        for head in range(heads):
            channels = slice(head * head_dim, (head + 1) * head_dim)
            for lvl, (h, w) in enumerate(level_shapes):
                for p in range(points):
                    dx, dy = offsets[head, lvl, p].tolist()
                    sample = bilinear(levels[lvl][channels],
                                      ref_x * w + dx - 0.5,
                                      ref_y * h + dy - 0.5)
                    expected[q, channels] += weights[head, lvl, p] * sample
    torch.testing.assert_close(out[0], query[0] + gamma * expected)

    # Zero-initialised gamma (the default) starts as the identity.
    injector.gamma.data.zero_()
    with torch.no_grad():
        assert torch.equal(injector(query, feat, inputs), query)


def test_extractor_residuals_and_per_level_conv_ffn() -> None:
    torch.manual_seed(0)
    dim, level_shapes = 8, [(4, 6), (2, 3), (1, 2)]
    extractor = Extractor(dim, 2, 2, deform_ratio=0.5).double().eval()
    query = torch.randn(2, 24 + 6 + 2, dim, dtype=torch.float64)
    feat = torch.randn(2, 6, dim, dtype=torch.float64)
    _, inputs = deform_inputs((2, 3), level_shapes, query.device)
    with torch.no_grad():
        attn_out = extractor.attn.output_proj
        attn_out.weight.zero_()
        attn_out.bias.zero_()
        # Zero attention: mmcv's identity is the raw (not normalised) query.
        after_attn = query
        out = extractor(query, feat, inputs, level_shapes)

        ffn = extractor.ffn
        hidden = ffn.fc1(F.layer_norm(after_attn, (dim, ), eps=1e-6))
        conv = ffn.dwconv.dwconv
        start, levels = 0, []
        for h, w in level_shapes:
            level = hidden[:, start:start + h * w].transpose(1, 2).reshape(
                2, -1, h, w)
            levels.append(
                F.conv2d(level, conv.weight, conv.bias, padding=1,
                         groups=conv.groups).flatten(2).transpose(1, 2))
            start += h * w
        expected = after_attn + ffn.fc2(F.gelu(torch.cat(levels, dim=1)))
    torch.testing.assert_close(out, expected)


def test_gradients_reach_adapter_and_vit() -> None:
    torch.manual_seed(0)
    model = tiny_adapter(init_values=0.1).train()
    random_loss(model(torch.randn(2, 3, 64, 64))).backward()
    no_grad = {name for name, param in model.named_parameters()
               if param.grad is None or not param.grad.abs().sum() > 0}
    # mmcv zero-initialises the weights that map the query to sampling
    # offsets and attention logits, so only the query norms start without
    # a gradient.
    assert no_grad and all('.query_norm.' in name for name in no_grad)
    assert len(no_grad) == 2 * (2 * 4 + 2)

    # With the official zero gamma only gamma learns in the injectors at
    # first; everything else still gets gradients.
    model = tiny_adapter().train()
    random_loss(model(torch.randn(2, 3, 64, 64))).backward()
    injector = model.interactions[0].injector
    assert injector.gamma.grad.abs().sum() > 0
    assert injector.attn.value_proj.weight.grad.abs().sum() == 0
    assert model.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert model.spm.stem[0].weight.grad.abs().sum() > 0


def forward_backward(model: EVAViTAdapter, images: torch.Tensor,
                     counted: List[nn.Module]) -> Dict[str, object]:
    calls = [0] * len(counted)
    for i, module in enumerate(counted):
        # A pre-hook: recomputation may stop before a forward ends.
        module.register_forward_pre_hook(
            lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    outs = model(images)
    random_loss(outs).backward()
    return dict(
        outs=outs,
        grads={n: p.grad for n, p in model.named_parameters()},
        calls=calls)


def test_with_cp_gives_same_outputs_and_gradients() -> None:
    torch.manual_seed(0)
    plain = tiny_adapter(init_values=0.1, with_cp=False).train()
    ckpt = tiny_adapter(init_values=0.1, with_cp=True).train()
    ckpt.load_state_dict(plain.state_dict())
    images = torch.randn(2, 3, 64, 64)
    results = [
        forward_backward(
            model, images,
            [model.blocks[0], model.interactions[0].injector.attn,
             model.interactions[3].extra_extractors[1].ffn])
        for model in (plain, ckpt)
    ]
    for a, b in zip(results[0]['outs'], results[1]['outs']):
        torch.testing.assert_close(a, b)
    for name, grad in results[0]['grads'].items():
        torch.testing.assert_close(grad, results[1]['grads'][name])
    # Checkpointed parts run their forward again during backward.
    assert results[0]['calls'] == [1, 1, 1]
    assert results[1]['calls'] == [2, 2, 2]


def test_plain_vit_weights_load_and_leave_only_adapter_keys(
        tmp_path) -> None:
    torch.manual_seed(0)
    vit = EVAViT(arch=TINY, img_size=64, patch_size=16, out_type='featmap',
                 final_norm=False)
    model = tiny_adapter()
    result = model.load_state_dict(vit.state_dict(), strict=False)
    assert result.unexpected_keys == []
    assert result.missing_keys
    assert all(k.startswith(ADAPTER_PREFIXES) for k in result.missing_keys)
    # BatchNorm fills in a missing num_batches_tracked without a report.
    assert set(result.missing_keys) == {
        k for k in model.state_dict()
        if k not in vit.state_dict() and not k.endswith('num_batches_tracked')
    }

    # init_cfg=Pretrained: the ViT part loads (the pos grid resized from a
    # 32 px file), the adapter keeps its initialisation.
    small = EVAViT(arch=TINY, img_size=32, patch_size=16, out_type='featmap',
                   final_norm=False)
    path = tmp_path / 'vit.pth'
    torch.save(small.state_dict(), path)
    model = tiny_adapter(init_cfg=dict(type='Pretrained', checkpoint=path))
    adapter_before = {
        k: v.clone() for k, v in model.state_dict().items()
        if k.startswith(ADAPTER_PREFIXES)
    }
    model.init_weights()
    state = model.state_dict()
    for key, value in small.state_dict().items():
        if key != 'pos_embed':
            assert torch.equal(state[key], value), key
    assert state['pos_embed'].shape == (1, 1 + 16, DIM)
    torch.testing.assert_close(state['pos_embed'][:, 0],
                               small.state_dict()['pos_embed'][:, 0])
    for key, value in adapter_before.items():
        assert torch.equal(state[key], value), key


class TinySegmentor(nn.Module):
    """An adapter ``backbone`` and a ``decode_head``, as mmseg builds."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = tiny_adapter()
        self.decode_head = nn.Conv2d(DIM, 3, 1)


def test_layer_decay_groups() -> None:
    model = TinySegmentor()
    rate, lr = 0.8, 1e-3
    optim_wrapper = build_optim_wrapper(
        model,
        dict(
            optimizer=dict(type='AdamW', lr=lr, weight_decay=0.05),
            constructor='eva_mm.LayerDecayOptimWrapperConstructor',
            paramwise_cfg=dict(layer_decay_rate=rate)))
    seen = {}
    for group in optim_wrapper.optimizer.param_groups:
        for name in group['param_names']:
            assert name not in seen, f'{name} is in two groups'
            seen[name] = group
    assert set(seen) == {name for name, _ in model.named_parameters()}

    num_layers = DEPTH + 2
    for name, group in seen.items():
        local = name[len('backbone.'):]
        if local.startswith('blocks.'):
            layer = int(local.split('.')[1]) + 1
        elif local in ('cls_token', 'pos_embed') or local.startswith(
                'patch_embed'):
            layer = 0
        else:  # adapter, and the decode head outside the backbone
            layer = num_layers - 1
        assert group['lr'] == pytest.approx(lr * rate**(num_layers - 1 -
                                                        layer)), name
    for name in ('backbone.level_embed',
                 'backbone.interactions.0.injector.attn.value_proj.weight',
                 'backbone.spm.stem.0.weight', 'backbone.up.weight',
                 'backbone.norm4.weight'):
        assert seen[name]['lr'] == pytest.approx(lr), name
    assert seen['backbone.level_embed']['weight_decay'] == 0.05
    assert seen['backbone.interactions.0.injector.gamma'][
        'weight_decay'] == 0


def test_builds_from_mmseg_registry_and_syncbn_reverts_for_cpu() -> None:
    torch.manual_seed(0)
    model = MMSEG_MODELS.build(
        dict(type='eva_mm.EVAViTAdapter', arch=TINY, img_size=64,
             deform_num_heads=4, conv_inplane=8))
    assert isinstance(model, EVAViTAdapter)
    assert isinstance(model.spm.stem[1], nn.SyncBatchNorm)
    # What mmengine's runner does when training is not distributed.
    model = revert_sync_batchnorm(copy.deepcopy(model)).train()
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
    outs = model(torch.randn(2, 3, 64, 64))
    assert outs[0].shape == (2, DIM, 16, 16)


def build_segmentor() -> nn.Module:
    """mmseg's EncoderDecoder with the tiny adapter and a UPerHead."""
    return MMSEG_MODELS.build(
        dict(
            type='EncoderDecoder',
            # 60 px images are padded to 64 (size_divisor), the fix the
            # adapter's size error names.
            data_preprocessor=dict(
                type='SegDataPreProcessor', size_divisor=32,
                test_cfg=dict(size_divisor=32), pad_val=0, seg_pad_val=255),
            backbone=dict(
                type='eva_mm.EVAViTAdapter', arch=TINY, img_size=64,
                deform_num_heads=4, conv_inplane=8,
                norm_cfg=dict(type='BN')),
            decode_head=dict(
                type='UPerHead', in_channels=[DIM] * 4,
                in_index=[0, 1, 2, 3], channels=16, num_classes=3,
                norm_cfg=dict(type='BN'), align_corners=False,
                loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0)),
            test_cfg=ConfigDict(mode='whole')))


def test_trains_in_mmseg_encoder_decoder_with_padding() -> None:
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    torch.manual_seed(0)
    # mmseg's nested parts (the data preprocessor) resolve in its scope.
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = build_segmentor()
    # Class 1 where the image is bright on the left, class 2 on the right.
    images, samples = [], []
    for i in range(2):
        label = torch.zeros(1, 60, 60, dtype=torch.long)
        label[:, :, :30] = 1
        label[:, :, 30:] = 2
        image = torch.full((3, 60, 60), 50.) + 150. * (label == 1).float()
        images.append(image + torch.randn(3, 60, 60) * 5)
        sample = SegDataSample(metainfo=dict(
            img_shape=(60, 60), ori_shape=(60, 60)))
        sample.gt_sem_seg = PixelData(data=label)
        samples.append(sample)
    data = dict(inputs=images, data_samples=samples)
    optim_wrapper = build_optim_wrapper(
        model, dict(optimizer=dict(type='AdamW', lr=1e-3)))
    losses = [
        model.train_step(data, optim_wrapper)['decode.loss_ce'].item()
        for _ in range(6)
    ]
    assert losses[-1] < 0.7 * losses[0], losses
    model.eval()
    with torch.no_grad():
        preds = model.val_step(data)
    assert preds[0].pred_sem_seg.data.shape == (1, 60, 60)
