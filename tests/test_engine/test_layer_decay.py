"""LayerDecayOptimWrapperConstructor on a tiny EVAViT with a head."""
import pytest
import torch
import torch.nn as nn
from mmengine.optim import OptimWrapper, build_optim_wrapper

import eva_mm  # noqa: F401  (registers eva_mm.* in the mmengine registries)
from eva_mm.engine import LayerDecayOptimWrapperConstructor
from eva_mm.models import EVAViT

DEPTH = 4
LR, WD, DECAY = 1e-3, 0.05, 0.8


class TinyClassifier(nn.Module):
    """An EVAViT ``backbone`` and a linear ``head``, as mmpretrain builds."""

    def __init__(self, **backbone_kwargs) -> None:
        super().__init__()
        self.backbone = EVAViT(
            arch=dict(embed_dims=32, num_layers=DEPTH, num_heads=2,
                      mlp_hidden_dim=64),
            img_size=32,
            patch_size=8,
            rel_pos='bias',
            with_mask_token=True,
            **backbone_kwargs)
        self.head = nn.Linear(32, 10)


def build(model: nn.Module, **paramwise_cfg) -> OptimWrapper:
    paramwise_cfg.setdefault('layer_decay_rate', DECAY)
    return build_optim_wrapper(
        model,
        dict(
            optimizer=dict(type='AdamW', lr=LR, weight_decay=WD),
            constructor='eva_mm.LayerDecayOptimWrapperConstructor',
            paramwise_cfg=paramwise_cfg))


def settings_by_name(optim_wrapper: OptimWrapper) -> dict:
    """``{param name: (lr, weight_decay)}``, failing on any duplicate."""
    settings = {}
    for group in optim_wrapper.optimizer.param_groups:
        assert len(group['params']) == len(group['param_names'])
        for name in group['param_names']:
            assert name not in settings, f'{name} is in two groups'
            settings[name] = (group['lr'], group['weight_decay'])
    return settings


def test_every_trainable_param_in_exactly_one_group() -> None:
    model = TinyClassifier()
    optim_wrapper = build(model)
    assert type(optim_wrapper) is OptimWrapper
    settings = settings_by_name(optim_wrapper)
    assert set(settings) == {name for name, _ in model.named_parameters()}
    grouped = [p for g in optim_wrapper.optimizer.param_groups
               for p in g['params']]
    assert len(grouped) == len({id(p) for p in grouped})
    assert {id(p) for p in grouped} == {id(p) for p in model.parameters()}
    # Group names and params agree: the names point at those tensors.
    params = dict(model.named_parameters())
    for group in optim_wrapper.optimizer.param_groups:
        for name, param in zip(group['param_names'], group['params']):
            assert params[name] is param


def test_lr_scale_follows_layer_depth() -> None:
    settings = settings_by_name(build(TinyClassifier()))
    # L = depth + 2 layers: embeddings 0, block k at k + 1, head L - 1,
    # and the lr scale is DECAY ** (L - 1 - layer id), written out.
    embeddings_lr = LR * DECAY * DECAY * DECAY * DECAY * DECAY  # id 0 of 6
    block_1_lr = LR * DECAY * DECAY * DECAY  # id 2 of 6
    block_3_lr = LR * DECAY  # id 4 of 6
    expected_lr = {
        'backbone.patch_embed.proj.weight': embeddings_lr,
        'backbone.pos_embed': embeddings_lr,
        'backbone.cls_token': embeddings_lr,
        'backbone.mask_token': embeddings_lr,
        'backbone.blocks.1.attn.qkv.weight': block_1_lr,
        'backbone.blocks.1.attn.relative_position_bias_table': block_1_lr,
        'backbone.blocks.1.mlp.fc1.bias': block_1_lr,
        'backbone.blocks.3.norm2.weight': block_3_lr,
        'backbone.norm.weight': LR,
        'head.weight': LR,
        'head.bias': LR,
    }
    for name, lr in expected_lr.items():
        assert settings[name][0] == pytest.approx(lr, rel=1e-12), name


def test_weight_decay_zero_for_flat_params_biases_and_embeddings() -> None:
    model = TinyClassifier()
    settings = settings_by_name(build(model))
    no_decay = {
        'backbone.pos_embed', 'backbone.cls_token', 'backbone.mask_token',
        'backbone.patch_embed.proj.bias', 'backbone.norm.weight',
        'backbone.norm.bias', 'head.bias'
    }
    for k in range(DEPTH):
        block = f'backbone.blocks.{k}.'
        no_decay |= {
            block + name
            for name in ('norm1.weight', 'norm1.bias', 'norm2.weight',
                         'norm2.bias', 'attn.q_bias', 'attn.v_bias',
                         'attn.proj.bias', 'mlp.fc1.bias', 'mlp.fc2.bias',
                         'attn.relative_position_bias_table')
        }
    decay = {name for name in settings if name not in no_decay}
    assert decay == {'backbone.patch_embed.proj.weight', 'head.weight'} | {
        f'backbone.blocks.{k}.{name}'
        for k in range(DEPTH)
        for name in ('attn.qkv.weight', 'attn.proj.weight', 'mlp.fc1.weight',
                     'mlp.fc2.weight')
    }
    for name in no_decay:
        assert settings[name][1] == 0., name
    for name in decay:
        assert settings[name][1] == WD, name


def test_frozen_params_are_left_out() -> None:
    model = TinyClassifier(frozen_stages=1)
    settings = settings_by_name(build(model))
    frozen = {name for name, p in model.named_parameters()
              if not p.requires_grad}
    assert 'backbone.blocks.0.attn.qkv.weight' in frozen
    assert 'backbone.pos_embed' in frozen
    assert set(settings) == {
        name for name, _ in model.named_parameters()} - frozen


def test_steps_with_the_grouped_lrs() -> None:
    """One AdamW step moves each weight by about its group's lr."""
    torch.manual_seed(0)
    model = TinyClassifier()
    optim_wrapper = build(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    logits = model.head(model.backbone(torch.randn(2, 3, 32, 32))[0])
    optim_wrapper.update_params(logits.square().mean())
    settings = settings_by_name(optim_wrapper)
    for name in ('backbone.cls_token', 'backbone.blocks.2.attn.v_bias',
                 'head.bias'):
        step = (dict(model.named_parameters())[name] - before[name]).abs()
        # Adam's first step is lr * sign(grad) where the grad is not ~0.
        assert step.max().item() == pytest.approx(settings[name][0],
                                                  rel=1e-3), name


def test_model_that_is_the_backbone_and_custom_prefix() -> None:
    backbone = TinyClassifier().backbone
    settings = settings_by_name(build(backbone))
    assert settings['cls_token'][0] == pytest.approx(LR * DECAY**5)
    assert settings['norm.weight'][0] == pytest.approx(LR)

    class Nested(nn.Module):

        def __init__(self) -> None:
            super().__init__()
            self.encoder = TinyClassifier()

    settings = settings_by_name(
        build(Nested(), backbone_prefix='encoder.backbone.'))
    assert settings['encoder.backbone.blocks.0.attn.qkv.weight'][
        0] == pytest.approx(LR * DECAY**4)
    assert settings['encoder.head.weight'][0] == pytest.approx(LR)


def test_bad_configs_raise() -> None:
    with pytest.raises(KeyError, match='num_layers'):
        build(TinyClassifier(), num_layers=6)
    with pytest.raises(KeyError, match="needs 'layer_decay_rate'"):
        LayerDecayOptimWrapperConstructor(
            dict(optimizer=dict(type='AdamW', lr=LR)), dict(
                backbone_prefix='backbone.'))
    with pytest.raises(ValueError, match=r'\(0, 1\]'):
        build(TinyClassifier(), layer_decay_rate=1.5)
    with pytest.raises(TypeError, match='get_layer_depth'):
        build(nn.Sequential(nn.Linear(2, 2)))


class TinySegmentor(nn.Module):
    """An EVAViT ``backbone`` and a Mask2Former-like ``decode_head`` with
    the modules the official EVA seg constructor puts at layer 0."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = TinyClassifier().backbone
        head = nn.Module()
        head.query_embed = nn.Embedding(4, 8)
        head.query_feat = nn.Embedding(4, 8)
        head.level_embed = nn.Embedding(3, 8)
        head.cls_embed = nn.Linear(8, 6)
        head.mask_embed = nn.Sequential(nn.Linear(8, 8), nn.ReLU(),
                                        nn.Linear(8, 8))
        # Not at layer 0: the rest of the head, and a name that merely
        # starts like a layer-0 module.
        head.transformer_decoder = nn.Linear(8, 8)
        head.query_embedding_extra = nn.Linear(8, 8)
        self.decode_head = head


HEAD_GROUPS = ('decode_head.mask_embed', 'decode_head.cls_embed',
               'decode_head.level_embed', 'decode_head.query_embed',
               'decode_head.query_feat')


def test_layer_zero_prefixes_put_head_groups_at_layer_zero() -> None:
    model = TinySegmentor()
    settings = settings_by_name(
        build(model, layer_zero_prefixes=HEAD_GROUPS, no_decay_names=()))
    num_layers = DEPTH + 2
    # By hand: layer 0 has lr * decay ** (num_layers - 1), the top lr.
    bottom, top = LR * DECAY**(num_layers - 1), LR
    for name, _ in model.named_parameters():
        if not name.startswith('decode_head.'):
            continue
        lr, wd = settings[name]
        expected = bottom if name.startswith(
            tuple(g + '.' for g in HEAD_GROUPS)) else top
        assert lr == pytest.approx(expected), name
        # 1-D and biases only are exempt (no_decay_names=()).
        assert wd == (0. if name.endswith('.bias') else WD), name
    assert settings['decode_head.query_embed.weight'][0] == pytest.approx(
        settings['backbone.patch_embed.proj.weight'][0])
    # The embeddings the official name check never exempts are decayed.
    for name in ('backbone.pos_embed', 'backbone.cls_token',
                 'backbone.blocks.0.attn.relative_position_bias_table'):
        assert settings[name][1] == WD, name
    # Default: everything outside the backbone at the top.
    default = settings_by_name(build(TinySegmentor()))
    assert default['decode_head.query_embed.weight'][0] == pytest.approx(top)


def test_layer_zero_prefixes_must_match() -> None:
    with pytest.raises(KeyError, match='decode_head.query_embeds'):
        build(TinySegmentor(),
              layer_zero_prefixes=['decode_head.query_embeds'])
    with pytest.raises(TypeError, match='sequence'):
        build(TinySegmentor(), layer_zero_prefixes='decode_head.query_embed')


def test_weight_decay_follows_the_backbone_declaration() -> None:
    """Without no_decay_names the constructor exempts exactly what the
    backbone's no_weight_decay() names (and the 1-D parameters): a
    parameter declared there loses its decay, whatever its name."""
    model = TinyClassifier()
    declared = model.backbone.no_weight_decay()
    assert declared == {'cls_token', 'pos_embed', 'mask_token'} | {
        f'blocks.{i}.attn.relative_position_bias_table'
        for i in range(DEPTH)}
    model.backbone.no_weight_decay = lambda: declared | {
        'blocks.1.mlp.fc1.weight'}
    settings = settings_by_name(build(model))
    assert settings['backbone.blocks.1.mlp.fc1.weight'][1] == 0
    assert settings['backbone.blocks.0.mlp.fc1.weight'][1] == WD
    # Decomposed rel-pos tables are declared too.
    decomposed = EVAViT(
        arch=dict(embed_dims=32, num_layers=2, num_heads=2, mlp_hidden_dim=64),
        img_size=32, patch_size=8, rel_pos='decomposed', window_size=2,
        with_cls_token=False, out_type='featmap')
    assert decomposed.no_weight_decay() == {'pos_embed'} | {
        f'blocks.{i}.attn.rel_pos_{axis}' for i in range(2)
        for axis in 'hw'}


def test_backbone_without_declaration_needs_names() -> None:

    class Undeclared(nn.Module):

        def __init__(self) -> None:
            super().__init__()
            self.pos_embed = nn.Parameter(torch.zeros(1, 4, 8))

        def get_layer_depth(self, name: str, prefix: str = ''):
            return 0, 2

    with pytest.raises(TypeError, match='no_decay_names'):
        build(Undeclared())
    settings = settings_by_name(build(Undeclared(), no_decay_names=()))
    assert settings['pos_embed'][1] == WD
