"""EVA MIM components against references computed another way.

The teacher is a tiny open_clip ViT with random weights, saved to a file that
the teacher reads back like real CLIP weights.
"""
import json
import math
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
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


def _mim_model(teacher: OpenCLIPTeacher | dict, seed: int = 1,
               width: int = 32, depth: int = 2, img_size: int = 32,
               out_channels: int = 24, backbone: dict | None = None,
               **kwargs) -> EVAMIM:
    """A small initialised EVAMIM: 2 heads, MLP 2 x width, patch 8.

    Args:
        teacher: The target generator (a module or its config).
        seed: The seed set before building.
        width: The student's width (and the head's input width).
        depth: The student's number of blocks.
        img_size: The input size.
        out_channels: The teacher's feature width.
        backbone: More EVAViT arguments.
        **kwargs: More EVAMIM arguments.

    Returns:
        The model after ``init_weights``.
    """
    torch.manual_seed(seed)
    model = EVAMIM(
        backbone=dict(
            type='eva_mm.EVAViT',
            arch=dict(embed_dims=width, num_layers=depth, num_heads=2,
                      mlp_hidden_dim=2 * width),
            img_size=img_size,
            patch_size=8,
            out_type='raw',
            with_mask_token=True,
            **(backbone or {})),
        head=dict(type='eva_mm.EVAMIMHead', in_channels=width,
                  out_channels=out_channels),
        target_generator=teacher,
        **kwargs)
    model.init_weights()
    return model


def _samples(masks: torch.Tensor) -> list:
    samples = []
    for mask in masks:
        sample = DataSample()
        sample.set_mask(mask)
        samples.append(sample)
    return samples


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


# A tiny EVA-02 timm tower as open_clip builds EVA-CLIP towers
# (model_configs/EVA01-g-14.json, EVA02-*.json: token pooling, the trunk's
# head as the projection).
TIMM_TOWER = dict(timm_model_name='eva02_tiny_patch14_224', timm_pool='token',
                  timm_proj=None, image_size=224)


def _perturbed(teacher: OpenCLIPTeacher) -> OpenCLIPTeacher:
    # timm's init leaves norms at identity and the head near zero; random
    # values everywhere show whether each is applied.
    torch.manual_seed(3)
    with torch.no_grad():
        for param in teacher.visual.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    return teacher


@pytest.mark.parametrize('proj', [None, 'linear'])
def test_timm_tower_targets_equal_timm_per_token(proj):
    import timm
    teacher = _perturbed(OpenCLIPTeacher(model_cfg=dict(
        embed_dim=32, vision_cfg=dict(TIMM_TOWER, timm_proj=proj))))
    assert teacher.patch_grid == (16, 16) and teacher.out_channels == 32
    # timm's own forward of the same weights without pooling gives every
    # token through the final norm and the head.
    reference = timm.create_model(
        'eva02_tiny_patch14_224', global_pool='',
        num_classes=0 if proj else 32).eval()
    # With an extra projection open_clip builds the trunk with timm's
    # default mean pooling, whose norm is the fc_norm after pooling; applied
    # per token it is the reference's final norm.
    reference.load_state_dict({
        key.replace('fc_norm.', 'norm.'): value
        for key, value in teacher.visual.trunk.state_dict().items()})
    images = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected = reference(images)[:, 1:]
        if proj:  # open_clip's extra projection, token-wise
            expected = expected @ teacher.visual.head.proj.weight.T
        # The cls column reproduces open_clip's own image embedding.
        pooled = teacher.visual(images)
        assert torch.allclose(
            reference(images)[:, 0] @ teacher.visual.head.proj.weight.T
            if proj else reference(images)[:, 0], pooled, atol=1e-5)
    targets = teacher(images)
    assert targets.shape == (2, 256, 32)
    torch.testing.assert_close(targets, expected)


def test_timm_tower_reads_a_file_and_refuses_attention_pooling(tmp_path):
    source = _perturbed(OpenCLIPTeacher(model_cfg=dict(
        embed_dim=32, vision_cfg=TIMM_TOWER)))
    path = tmp_path / 'tower.pt'
    torch.save({f'visual.{k}': v
                for k, v in source.visual.state_dict().items()}, path)
    loaded = OpenCLIPTeacher(
        model_cfg=dict(embed_dim=32, vision_cfg=TIMM_TOWER),
        pretrained=str(path))
    images = torch.randn(1, 3, 224, 224)
    torch.testing.assert_close(loaded(images), source(images))
    with pytest.raises(ValueError, match='attention pooling'):
        OpenCLIPTeacher(model_cfg=dict(
            embed_dim=32, vision_cfg=dict(
                timm_model_name='vit_tiny_patch16_224', timm_pool='map',
                timm_proj=None)))


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
    # The teacher ignores the model's dtype casts (it stays fp32, as the
    # official one) and follows its device moves.
    model.to(torch.bfloat16)
    assert model.backbone.cls_token.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in teacher.parameters())
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, before[key]), key
    model.to('meta')
    assert teacher.visual.proj.device.type == 'meta'


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


# ---------------------------------------------------------------- precision
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_teacher_stays_fp32_and_runs_under_autocast(clip_file, dtype):
    clip, path = clip_file
    teacher = OpenCLIPTeacher(model_cfg=TEACHER_CFG, pretrained=str(path))
    model = _mim_model(teacher)
    images = torch.randn(2, 3, 32, 32)
    reference = _by_hand(clip, images)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    model.half() if dtype == torch.float16 else model.bfloat16()
    assert model.backbone.pos_embed.dtype == dtype
    assert model.head.fc.weight.dtype == dtype
    for key, value in teacher.state_dict().items():
        assert value.dtype == torch.float32 and torch.equal(
            value, before[key]), key
    # Low-precision images (DeepSpeed's inputs_to_half) run the fp32
    # teacher under autocast in their dtype, as the official
    # torch.cuda.amp.autocast() around the teacher.
    targets = teacher(images.to(dtype))
    assert targets.dtype == dtype
    torch.testing.assert_close(
        targets.float(), reference, rtol=0.05, atol=0.05)
    # fp32 images inside the caller's autocast (mmengine AMP) likewise.
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert teacher(images).dtype == torch.bfloat16
    # And plain fp32 without autocast is exact fp32.
    torch.testing.assert_close(teacher(images), reference)
    # The whole loss runs with the cast student and the fp32 teacher.
    masks = torch.zeros(2, GRID, GRID, dtype=torch.long)
    masks[:, :2] = 1
    loss = model(images.to(dtype), _samples(masks), mode='loss')['loss']
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


# ---------------------------------------------------------------- init
def _truncated_std_factor() -> float:
    """Std of N(0, 1) truncated to [-1, 1]: 1 - 2 phi(1) / (2 Phi(1) - 1)."""
    phi = math.exp(-0.5) / math.sqrt(2 * math.pi)
    mass = math.erf(1 / math.sqrt(2))
    return math.sqrt(1 - 2 * phi / mass)


def _wide_mim(init_std, **backbone) -> EVAMIM:
    teacher = dict(
        type='eva_mm.OpenCLIPTeacher',
        model_cfg=dict(
            TEACHER_CFG,
            vision_cfg=dict(TEACHER_CFG['vision_cfg'], image_size=64)))
    return _mim_model(teacher, seed=4, width=128, depth=3, img_size=64,
                      out_channels=96, backbone=backbone, init_std=init_std)


def test_official_init_statistics():
    std = 0.015
    model = _wide_mim(std)
    factor = _truncated_std_factor()  # 0.5396
    params = dict(model.named_parameters())
    weights = {
        name: value
        for name, value in params.items()
        if name.endswith('weight') and value.dim() >= 2
    }
    # Linear layers (qkv, proj, fc1, fc2, head) and the patch-embedding
    # Conv2d, plus the tokens and the position embedding.
    assert {'backbone.patch_embed.proj.weight', 'head.fc.weight',
            'backbone.blocks.2.attn.qkv.weight'} <= set(weights)
    for name in ['backbone.pos_embed', 'backbone.cls_token',
                 'backbone.mask_token', *weights]:
        value = params[name]
        scale = std
        block = name.split('.')[2] if '.blocks.' in name else None
        if name.endswith(('attn.proj.weight', 'mlp.fc2.weight')):
            # Divided by sqrt(2 * depth), depth counted from 1.
            scale = std / math.sqrt(2.0 * (int(block) + 1))
        assert value.abs().max() <= scale * (1 + 1e-6), name
        if value.numel() >= 4000:
            assert abs(value.std().item() / (scale * factor) - 1) < 0.05, name
            assert value.abs().max() > 0.95 * scale, name
    for name, value in params.items():
        if name.endswith('bias'):
            assert not value.any(), name
        elif 'norm' in name:
            assert torch.equal(value, torch.ones_like(value)), name

    # Without init_std, the modules' own init: std 0.02, far wider.
    default = _wide_mim(None)
    assert default.backbone.pos_embed.abs().max() > 0.03
    assert default.head.fc.weight.abs().max() > 0.03


def test_mim_configs_set_the_official_init_and_decay_mask_token(clip_file):
    configs = Path(__file__).resolve().parents[2] / 'configs/mim'
    # The EVA-01 configs (EVA-02's init is its student's init_mode).
    stds = {
        path.stem: Config.fromfile(str(path)).model.init_std
        for path in configs.glob('eva-*.py')
    }
    assert stds == {
        name: 0.015 if 'giant' in name else 0.02
        for name in stds
    }, stds
    recipe = Config.fromfile(
        str(configs / 'eva-mim_vit-giant-p14_clip-l14_128xb32-150e.py'))
    _, path = clip_file
    model = _mim_model(OpenCLIPTeacher(model_cfg=TEACHER_CFG,
                                       pretrained=str(path)))
    optim = build_optim_wrapper(
        model,
        dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
             constructor=recipe.optim_wrapper.constructor,
             paramwise_cfg=recipe.optim_wrapper.paramwise_cfg))
    decay = {
        name: group['weight_decay']
        for group in optim.optimizer.param_groups
        for name in group['param_names']
    }
    # The official groups (optim_factory.py:69): 1-D, biases and
    # no_weight_decay() = {pos_embed, cls_token} undecayed; mask_token,
    # 3-D like them, decayed.
    expected = {
        name: 0. if (param.dim() == 1 or name.endswith('.bias') or name in
                     ('backbone.pos_embed', 'backbone.cls_token')) else 0.05
        for name, param in model.named_parameters()
    }
    assert decay == expected
    assert decay['backbone.mask_token'] == 0.05


def test_official_init_keeps_a_pretrained_student(tmp_path):
    trained = _wide_mim(0.02)
    with torch.no_grad():
        trained.backbone.pos_embed.fill_(0.5)  # far outside +-init_std
    path = tmp_path / 'student.pth'
    torch.save(dict(state_dict=trained.backbone.state_dict()), path)
    model = _wide_mim(
        0.015, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    for key, value in trained.backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[key], value), key
    # Only the head gets the official init.
    assert model.head.fc.weight.abs().max() <= 0.015
    assert not model.head.fc.bias.any()


# ---------------------------------------------------------------- EVA-02
def _eva02_mim(teacher: OpenCLIPTeacher, scale_mlp: bool = True,
               grad_scale: float = 1.0, width: int = 256) -> EVAMIM:
    """An EVA-02 MIM model initialised as the EVA-02 MIM configs do."""
    recipe = Config.fromfile(
        str(Path(__file__).resolve().parents[2] /
            'configs/mim/_base_/eva02-mim_eva-clip-g14_recipe.py'))
    model = EVAMIM(
        backbone=dict(
            type='eva_mm.EVAViT',
            arch=dict(embed_dims=width, num_layers=4, num_heads=4,
                      mlp_hidden_dim=width * 8 // 3, swiglu_mlp=True,
                      scale_mlp=scale_mlp, use_rot_pos_emb=True,
                      ref_feat_shape=GRID),
            img_size=32,
            patch_size=8,
            out_type='raw',
            with_mask_token=True,
            init_mode=recipe.model.backbone.init_mode),
        head=dict(type='eva_mm.EVAMIMHead', in_channels=width,
                  out_channels=24, init_cfg=recipe.model.head.init_cfg),
        target_generator=teacher,
        init_std=recipe.model.init_std,
        patch_embed_grad_scale=grad_scale)
    model.init_weights()
    return model


@pytest.mark.parametrize('scale_mlp', [True, False])
def test_eva02_config_init_statistics(clip_file, scale_mlp):
    """The official EVA-02 student and lm_head init (modeling_pretrain.py:
    109-154: Xavier widths of the official layer shapes, the sub-LN
    rescale) through the configs' settings, from the layer shapes."""
    _, path = clip_file
    torch.manual_seed(0)
    model = _eva02_mim(
        OpenCLIPTeacher(model_cfg=TEACHER_CFG, pretrained=str(path)),
        scale_mlp=scale_mlp)
    width, hidden = 256, 256 * 8 // 3
    # B/L (sub-LN): separate (C, C) q/k/v and (H, C) w1/w2, the value,
    # output and MLP weights times sqrt(log(2 * depth)). Ti/S: one (3C, C)
    # qkv and a packed (2H, C) w12, no rescale.
    gain = math.sqrt(math.log(2 * 4)) if scale_mlp else 1.

    def xavier(fan_in: int, fan_out: int) -> float:
        return math.sqrt(2. / (fan_in + fan_out))

    def check_std(tensor: torch.Tensor, std: float) -> None:
        assert tensor.std().item() == pytest.approx(std, rel=0.05)

    qk = xavier(width, width) if scale_mlp else xavier(width, 3 * width)
    fc1 = xavier(width, hidden) if scale_mlp else xavier(width, 2 * hidden)
    for block in model.backbone.blocks:
        q, k, v = block.attn.qkv.weight.chunk(3)
        check_std(q, qk)
        check_std(k, qk)
        check_std(v, qk * gain)
        check_std(block.attn.proj.weight, xavier(width, width) * gain)
        check_std(block.mlp.fc1_g.weight, fc1 * gain)
        check_std(block.mlp.fc1_x.weight, fc1 * gain)
        check_std(block.mlp.fc2.weight, xavier(hidden, width) * gain)
    check_std(model.head.fc.weight, xavier(width, 24))
    assert not model.head.fc.bias.any()
    for name in ('pos_embed', 'cls_token', 'mask_token'):
        assert getattr(model.backbone, name).abs().max() <= 0.02, name


def test_eva02_patch_embed_gets_a_tenth_of_the_gradient(clip_file):
    """--stop_grad_conv1 (modeling_pretrain.py:213-214): same loss, the
    patch embedding's gradients x 0.1, every other gradient unchanged."""
    _, path = clip_file
    teacher = OpenCLIPTeacher(model_cfg=TEACHER_CFG, pretrained=str(path))
    torch.manual_seed(0)
    plain = _eva02_mim(teacher, width=32)
    scaled = _eva02_mim(teacher, grad_scale=0.1, width=32)
    scaled.load_state_dict(plain.state_dict())
    images = torch.randn(2, 3, 32, 32)
    masks = torch.zeros(2, GRID, GRID, dtype=torch.long)
    masks[:, 1:3] = 1
    losses = []
    for model in (plain, scaled):
        loss = model(images, _samples(masks), mode='loss')['loss']
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[0], losses[1])
    grads = dict(scaled.named_parameters())
    for name, param in plain.named_parameters():
        factor = 0.1 if name.startswith('backbone.patch_embed.') else 1.
        assert param.grad.abs().sum() > 0, name
        torch.testing.assert_close(grads[name].grad, param.grad * factor,
                                   msg=name)
    with pytest.raises(ValueError, match='patch_embed_grad_scale'):
        EVAMIM(backbone=plain.backbone, head=plain.head,
               target_generator=teacher, patch_embed_grad_scale=0.)
