"""EVA MIM components against references computed another way.

The teacher is a tiny open_clip ViT with random weights, saved to a file that
the teacher reads back like real CLIP weights.
"""
import json
import math

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from mmengine.optim import build_optim_wrapper
from mmpretrain.datasets.transforms import BEiTMaskGenerator
from mmpretrain.structures import DataSample

import eva_mm  # noqa: F401
from eva_mm.models import EVAMIM, EVAMIMHead, OpenCLIPTeacher

TEACHER_CFG = dict(
    embed_dim=24,
    vision_cfg=dict(image_size=32, layers=2, width=32, patch_size=8,
                    head_width=16),
    text_cfg=dict(context_length=8, vocab_size=64, width=16, heads=2,
                  layers=1))
GRID = 4  # 32 / 8


@pytest.fixture(scope='module')
def clip_file(tmp_path_factory):
    torch.manual_seed(0)
    clip = open_clip.CLIP(**TEACHER_CFG)
    # Random init leaves ln_post at identity; perturb it so the test sees
    # whether the teacher applies it.
    with torch.no_grad():
        clip.visual.ln_post.weight.uniform_(0.5, 1.5)
        clip.visual.ln_post.bias.normal_()
    path = tmp_path_factory.mktemp('clip') / 'clip.pt'
    torch.save(clip.state_dict(), path)
    return clip.eval(), path


def _mim_model(teacher: OpenCLIPTeacher) -> EVAMIM:
    torch.manual_seed(1)
    model = EVAMIM(
        backbone=dict(
            type='eva_mm.EVAViT',
            arch=dict(embed_dims=32, num_layers=2, num_heads=2,
                      mlp_hidden_dim=64),
            img_size=32,
            patch_size=8,
            out_type='raw',
            with_mask_token=True),
        head=dict(type='eva_mm.EVAMIMHead', in_channels=32, out_channels=24),
        target_generator=teacher)
    model.init_weights()
    return model


def _samples(masks: torch.Tensor) -> list:
    samples = []
    for mask in masks:
        sample = DataSample()
        sample.set_mask(mask)
        samples.append(sample)
    return samples


# ---------------------------------------------------------------- masking
def _eva_masker() -> BEiTMaskGenerator:
    # EVA-01 at 224 with patch 14: 40% of the 16x16 grid, blocks >= 16.
    return BEiTMaskGenerator(
        input_size=16, num_masking_patches=105, min_num_patches=16,
        max_num_patches=None, min_aspect=0.3)


def test_mask_count_is_exact_and_seeded():
    masker = _eva_masker()
    masks = []
    for seed in range(100):
        np.random.seed(seed)
        masks.append(masker.transform({})['mask'])
    assert all(m.shape == (16, 16) and m.sum() == 105 for m in masks)
    assert len({m.tobytes() for m in masks}) == 100
    np.random.seed(7)
    again = masker.transform({})['mask']
    assert np.array_equal(again, masks[7])


def test_mask_blocks_follow_beit_sampling():
    """Each block is the rectangle drawn from the documented distribution."""
    masker = _eva_masker()
    lo, hi = math.log(0.3), math.log(1 / 0.3)
    aspects, areas = [], []
    for seed in range(200):
        np.random.seed(seed)
        mask = np.zeros((16, 16), dtype=int)
        added = masker._mask(mask, 105)
        # The same draws by hand: area, log-uniform aspect, then position;
        # a block that does not fit the grid, or rounds to more than the
        # patches left, is redrawn (up to 10 times).
        np.random.seed(seed)
        for _ in range(10):
            area = np.random.uniform(16, 105)
            aspect = math.exp(np.random.uniform(lo, hi))
            h = int(round(math.sqrt(area * aspect)))
            w = int(round(math.sqrt(area / aspect)))
            if h < 16 and w < 16:
                top = np.random.randint(0, 16 - h)
                left = np.random.randint(0, 16 - w)
                if h * w <= 105:
                    break
        expected = np.zeros((16, 16), dtype=int)
        expected[top:top + h, left:left + w] = 1
        assert np.array_equal(mask, expected)
        assert added == h * w <= 105
        aspects.append(h / w)
        areas.append(h * w)
    # Rounding to whole patches widens the limits by under one patch.
    assert min(aspects) >= 0.3 * 2 / 3 and max(aspects) <= 1.5 / 0.3
    assert min(aspects) < 0.5 and max(aspects) > 2
    assert min(areas) >= 12 and max(areas) <= 105


# ---------------------------------------------------------------- teacher
def _by_hand(clip, images: torch.Tensor) -> torch.Tensor:
    """ln_post + proj on the last block's tokens, captured by a hook."""
    captured = {}
    handle = clip.visual.transformer.register_forward_hook(
        lambda module, args, out: captured.setdefault('x', out))
    with torch.no_grad():
        pooled = clip.encode_image(images)
    handle.remove()
    x = captured['x']
    ln = clip.visual.ln_post
    normed = (x - x.mean(-1, keepdim=True)) / torch.sqrt(
        x.var(-1, unbiased=False, keepdim=True) + ln.eps)
    projected = (normed * ln.weight + ln.bias) @ clip.visual.proj
    # The cls column must reproduce open_clip's own image embedding, which
    # shows the hook caught the right tensor.
    torch.testing.assert_close(projected[:, 0], pooled)
    return projected[:, 1:]


def test_teacher_targets_are_projected_patch_tokens(clip_file, tmp_path):
    clip, path = clip_file
    images = torch.randn(2, 3, 32, 32)
    expected = _by_hand(clip, images)
    from_cfg = OpenCLIPTeacher(model_cfg=TEACHER_CFG, pretrained=str(path))
    torch.testing.assert_close(from_cfg(images), expected)
    assert from_cfg.out_channels == 24 and from_cfg.patch_grid == (4, 4)

    # The same through open_clip's own factory, by model name.
    (tmp_path / 'EVA-test-tiny.json').write_text(json.dumps(TEACHER_CFG))
    open_clip.add_model_config(tmp_path / 'EVA-test-tiny.json')
    by_name = OpenCLIPTeacher('EVA-test-tiny', pretrained=str(path))
    torch.testing.assert_close(by_name(images), expected)
    quick = OpenCLIPTeacher('EVA-test-tiny', quick_gelu=True)
    assert isinstance(quick.visual.transformer.resblocks[0].mlp.gelu,
                      open_clip.transformer.QuickGELU)


# ---------------------------------------------------------------- loss
def test_loss_uses_masked_positions_only(clip_file):
    torch.manual_seed(0)
    head = EVAMIMHead(in_channels=8, out_channels=6)
    tokens, target = torch.randn(2, 16, 8), torch.randn(2, 16, 6)
    mask = torch.rand(2, 16) < 0.4
    loss = head.loss(tokens, target, mask)
    pred = tokens @ head.fc.weight.T + head.fc.bias
    cos = F.cosine_similarity(pred, target, dim=-1)
    torch.testing.assert_close(loss, -cos[mask].mean())
    # Anything at unmasked positions, even non-finite, leaves it unchanged.
    tokens[~mask], target[~mask] = float('nan'), 1e4
    torch.testing.assert_close(head.loss(tokens, target, mask), loss)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert head.loss(tokens, target, mask).dtype == torch.float32


def test_algorithm_loss_matches_manual(clip_file):
    clip, path = clip_file
    model = _mim_model(OpenCLIPTeacher(model_cfg=TEACHER_CFG,
                                       pretrained=str(path)))
    images = torch.randn(2, 3, 32, 32)
    masks = torch.zeros(2, GRID, GRID, dtype=torch.long)
    masks[0, :2], masks[1, 1:, 1:3] = 1, 1
    loss = model(images, _samples(masks), mode='loss')['loss']
    flat = masks.flatten(1).bool()
    tokens = model.backbone(images, mask=flat)[0][:, 1:]
    pred = model.head.fc(tokens[flat])
    expected = -F.cosine_similarity(
        pred, _by_hand(clip, images)[flat], dim=-1).mean()
    torch.testing.assert_close(loss, expected)


# ---------------------------------------------------------------- frozen
def test_teacher_frozen_and_outside_checkpoint_and_optimizer(clip_file):
    _, path = clip_file
    teacher = OpenCLIPTeacher(model_cfg=TEACHER_CFG, pretrained=str(path))
    model = _mim_model(teacher)
    teacher_ids = {id(p) for p in teacher.parameters()}
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    assert all(not k.startswith('target_generator')
               for k in model.state_dict())
    assert not teacher_ids & {id(p) for p in model.parameters()}

    optim = build_optim_wrapper(
        model,
        dict(
            optimizer=dict(type='AdamW', lr=1e-2, weight_decay=0.05),
            constructor='eva_mm.LayerDecayOptimWrapperConstructor',
            paramwise_cfg=dict(layer_decay_rate=1.0)))
    in_optim = {id(p) for g in optim.optimizer.param_groups
                for p in g['params']}
    assert in_optim == {id(p) for p in model.parameters()}
    no_decay = {n for g in optim.optimizer.param_groups
                if g['weight_decay'] == 0 for n in g['param_names']}
    assert {'backbone.pos_embed', 'backbone.cls_token',
            'backbone.mask_token', 'backbone.blocks.0.attn.q_bias',
            'head.fc.bias', 'backbone.norm.weight'} <= no_decay
    assert 'head.fc.weight' not in no_decay

    model.train()
    assert not teacher.training and not any(
        p.requires_grad for p in teacher.parameters())
    masks = torch.zeros(2, GRID, GRID, dtype=torch.long)
    masks[:, 1:3] = 1
    for _ in range(2):
        optim.update_params(
            model(torch.randn(2, 3, 32, 32), _samples(masks),
                  mode='loss')['loss'])
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, before[key]), key
    # The teacher follows the model's dtype moves.
    model.to(torch.bfloat16)
    assert teacher.visual.proj.dtype == torch.bfloat16


def test_loss_falls_on_a_fixed_batch(clip_file):
    _, path = clip_file
    model = _mim_model(OpenCLIPTeacher(model_cfg=TEACHER_CFG,
                                       pretrained=str(path)))
    torch.manual_seed(2)
    images = torch.randn(4, 3, 32, 32)
    masks = torch.zeros(4, GRID, GRID, dtype=torch.long)
    masks[0, :2], masks[1, 2:], masks[2, :, :2], masks[3, :, 2:] = 1, 1, 1, 1
    optim = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = model(images, _samples(masks), mode='loss')['loss']
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.3
