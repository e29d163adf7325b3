"""The key layout of the released EVA-01 segmentation checkpoints, written
from the official model code (baaivision/EVA, EVA-01/seg), not from eva_mm's:

- ``mmseg_custom/models/backbones/base/beit.py`` (``BEiT``: ``cls_token``,
  ``pos_embed`` with a cls position, ``patch_embed.proj``, blocks with
  ``attn.qkv`` without bias plus ``q_bias``/``v_bias``, the rel-pos
  variant's per-block ``relative_position_bias_table`` and its persistent
  ``relative_position_index`` buffer, ``gamma_1/2`` with ``init_values``);
- ``mmseg_custom/models/backbones/beit_adapter.py`` and
  ``adapter_modules.py`` (``level_embed``, ``spm`` with SyncBN after every
  conv, ``interactions.i.{injector, extractor, extra_extractors}`` on
  ``MSDeformAttn(d_model, n_levels, n_heads, n_points, ratio)``, ``up``,
  ``norm1..4``);
- ``mmseg_custom/models/plugins/msdeformattn_pixel_decoder.py`` and
  ``decode_heads/mask2former_head.py`` with mmcv 1.x ``BaseTransformerLayer``
  lists (``attentions.N``, ``ffns.0.layers.{0.0,1}``, ``norms.N``),
  ``transformer_decoder.post_norm``, and no ``conv_seg`` (set to None).
"""
from typing import Dict, Tuple

import torch

Shapes = Dict[str, Tuple[int, ...]]


def _add(shapes: Shapes, prefix: str, **entries: Tuple[int, ...]) -> None:
    for name, shape in entries.items():
        shapes[prefix + name] = shape


def _linear(shapes: Shapes, prefix: str, out: int, inp: int) -> None:
    _add(shapes, prefix, weight=(out, inp), bias=(out, ))


def _norm(shapes: Shapes, prefix: str, dim: int) -> None:
    _add(shapes, prefix, weight=(dim, ), bias=(dim, ))


def _sync_bn(shapes: Shapes, prefix: str, dim: int) -> None:
    _add(shapes, prefix, weight=(dim, ), bias=(dim, ), running_mean=(dim, ),
         running_var=(dim, ), num_batches_tracked=())


def _ms_deform_attn(shapes: Shapes, prefix: str, dim: int, heads: int,
                    levels: int, points: int, ratio: float) -> None:
    """ViT-Adapter's ``ops/modules/ms_deform_attn.py`` MSDeformAttn (and
    mmcv's MultiScaleDeformableAttention with ratio 1)."""
    _linear(shapes, prefix + 'sampling_offsets.', heads * levels * points * 2,
            dim)
    _linear(shapes, prefix + 'attention_weights.', heads * levels * points,
            dim)
    _linear(shapes, prefix + 'value_proj.', int(dim * ratio), dim)
    _linear(shapes, prefix + 'output_proj.', dim, int(dim * ratio))


def beit_adapter_shapes(embed_dim: int, depth: int, num_heads: int,
                        mlp_hidden: int, patch_size: int, img_size: int,
                        conv_inplane: int, deform_heads: int,
                        num_interactions: int = 4, n_points: int = 4,
                        deform_ratio: float = 0.5, cffn_ratio: float = 0.25,
                        rel_pos_bias: bool = False,
                        layer_scale: bool = False) -> Shapes:
    """``backbone.*`` of ``BEiTAdapter`` (official names and shapes)."""
    s: Shapes = {}
    side = img_size // patch_size
    d = embed_dim
    _add(s, 'backbone.', cls_token=(1, 1, d), pos_embed=(1, side * side + 1,
                                                          d))
    _add(s, 'backbone.patch_embed.proj.', weight=(d, 3, patch_size,
                                                  patch_size), bias=(d, ))
    for i in range(depth):
        p = f'backbone.blocks.{i}.'
        _norm(s, p + 'norm1.', d)
        _add(s, p + 'attn.', q_bias=(d, ), v_bias=(d, ))
        s[p + 'attn.qkv.weight'] = (3 * d, d)
        if rel_pos_bias:
            s[p + 'attn.relative_position_bias_table'] = (
                (2 * side - 1)**2 + 3, num_heads)
            s[p + 'attn.relative_position_index'] = (side * side + 1, ) * 2
        _linear(s, p + 'attn.proj.', d, d)
        _norm(s, p + 'norm2.', d)
        _linear(s, p + 'mlp.fc1.', mlp_hidden, d)
        _linear(s, p + 'mlp.fc2.', d, mlp_hidden)
        if layer_scale:
            _add(s, p, gamma_1=(d, ), gamma_2=(d, ))
    s['backbone.level_embed'] = (3, d)
    c = conv_inplane
    stem = [(0, c, 3), (3, c, c), (6, c, c)]
    for index, out, inp in stem:
        s[f'backbone.spm.stem.{index}.weight'] = (out, inp, 3, 3)
        _sync_bn(s, f'backbone.spm.stem.{index + 1}.', out)
    for name, out, inp in (('conv2', 2 * c, c), ('conv3', 4 * c, 2 * c),
                           ('conv4', 4 * c, 4 * c)):
        s[f'backbone.spm.{name}.0.weight'] = (out, inp, 3, 3)
        _sync_bn(s, f'backbone.spm.{name}.1.', out)
    for name, inp in (('fc1', c), ('fc2', 2 * c), ('fc3', 4 * c),
                      ('fc4', 4 * c)):
        _add(s, f'backbone.spm.{name}.', weight=(d, inp, 1, 1), bias=(d, ))
    hidden = int(d * cffn_ratio)

    def extractor(p: str) -> None:
        _norm(s, p + 'query_norm.', d)
        _norm(s, p + 'feat_norm.', d)
        _ms_deform_attn(s, p + 'attn.', d, deform_heads, 1, n_points,
                        deform_ratio)
        _linear(s, p + 'ffn.fc1.', hidden, d)
        _add(s, p + 'ffn.dwconv.dwconv.', weight=(hidden, 1, 3, 3),
             bias=(hidden, ))
        _linear(s, p + 'ffn.fc2.', d, hidden)
        _norm(s, p + 'ffn_norm.', d)

    for i in range(num_interactions):
        p = f'backbone.interactions.{i}.'
        _norm(s, p + 'injector.query_norm.', d)
        _norm(s, p + 'injector.feat_norm.', d)
        _ms_deform_attn(s, p + 'injector.attn.', d, deform_heads, 3, n_points,
                        deform_ratio)
        s[p + 'injector.gamma'] = (d, )
        extractor(p + 'extractor.')
        if i == num_interactions - 1:
            extractor(p + 'extra_extractors.0.')
            extractor(p + 'extra_extractors.1.')
    # ConvTranspose2d weights are (in, out, k, k).
    _add(s, 'backbone.up.', weight=(d, d, 2, 2), bias=(d, ))
    for i in range(1, 5):
        _sync_bn(s, f'backbone.norm{i}.', d)
    return s


def mask2former_head_shapes(in_channels: int, feat: int, num_classes: int,
                            num_queries: int, enc_layers: int,
                            enc_heads: int, enc_ffn: int, dec_layers: int,
                            dec_ffn: int, num_levels: int = 3,
                            num_points: int = 4,
                            gn: bool = True) -> Shapes:
    """``decode_head.*`` of the official ``Mask2FormerHead`` (mmcv 1.x)."""
    s: Shapes = {}
    h = 'decode_head.'
    pd = h + 'pixel_decoder.'
    for i in range(num_levels):
        # ConvModule(bias=True) with GN: conv.{weight,bias}, gn.*
        _add(s, f'{pd}input_convs.{i}.conv.', weight=(feat, in_channels, 1,
                                                      1), bias=(feat, ))
        _norm(s, f'{pd}input_convs.{i}.gn.', feat)
    for layer in range(enc_layers):
        p = f'{pd}encoder.layers.{layer}.'
        _ms_deform_attn(s, p + 'attentions.0.', feat, enc_heads, num_levels,
                        num_points, 1.0)
        _linear(s, p + 'ffns.0.layers.0.0.', enc_ffn, feat)
        _linear(s, p + 'ffns.0.layers.1.', feat, enc_ffn)
        _norm(s, p + 'norms.0.', feat)
        _norm(s, p + 'norms.1.', feat)
    s[pd + 'level_encoding.weight'] = (num_levels, feat)
    # One FPN level below the encoder's (4 inputs, 3 encoder levels); the
    # ConvModules have no bias when they have a norm.
    s[pd + 'lateral_convs.0.conv.weight'] = (feat, in_channels, 1, 1)
    _norm(s, pd + 'lateral_convs.0.gn.', feat)
    s[pd + 'output_convs.0.conv.weight'] = (feat, feat, 3, 3)
    _norm(s, pd + 'output_convs.0.gn.', feat)
    _add(s, pd + 'mask_feature.', weight=(feat, feat, 1, 1), bias=(feat, ))
    for layer in range(dec_layers):
        p = f'{h}transformer_decoder.layers.{layer}.'
        for attn in (0, 1):
            q = f'{p}attentions.{attn}.attn.'
            _add(s, q, in_proj_weight=(3 * feat, feat),
                 in_proj_bias=(3 * feat, ))
            _linear(s, q + 'out_proj.', feat, feat)
        _linear(s, p + 'ffns.0.layers.0.0.', dec_ffn, feat)
        _linear(s, p + 'ffns.0.layers.1.', feat, dec_ffn)
        for n in range(3):
            _norm(s, f'{p}norms.{n}.', feat)
    _norm(s, h + 'transformer_decoder.post_norm.', feat)
    _add(s, h, **{
        'query_embed.weight': (num_queries, feat),
        'query_feat.weight': (num_queries, feat),
        'level_embed.weight': (num_levels, feat),
    })
    _linear(s, h + 'cls_embed.', num_classes + 1, feat)
    for i in (0, 2, 4):
        _linear(s, f'{h}mask_embed.{i}.', feat, feat)
    return s


def random_state_dict(shapes: Shapes, seed: int = 0) -> Dict[str,
                                                             torch.Tensor]:
    """Random values of the given shapes: int64 for the index buffers and
    the BN counters, positive BN variances, float32 for the rest."""
    generator = torch.Generator().manual_seed(seed)
    weights = {}
    for key, shape in shapes.items():
        if key.endswith(('relative_position_index', 'num_batches_tracked')):
            weights[key] = torch.randint(0, 100, shape, generator=generator)
        elif key.endswith('running_var'):
            weights[key] = torch.rand(shape, generator=generator) + 0.5
        else:
            weights[key] = torch.randn(shape, generator=generator)
    return weights
