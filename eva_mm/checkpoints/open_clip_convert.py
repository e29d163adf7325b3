"""EVAViT weights to and from open_clip's EVA CLIP models.

open_clip defines its EVA CLIP models (``EVA01-g-14``, ``EVA01-g-14-plus``)
with a timm tower: ``visual.trunk`` is timm's ``Eva`` and, with
``timm_proj: null`` as in those configs, the CLIP projection is the trunk's
own classifier, ``visual.trunk.head`` (a linear layer with bias) applied to
the cls token after the final ``norm``. timm's EVA-01 names are EVAViT's, so
exporting means placing the backbone under ``visual.trunk.`` in the state
dict of a whole open_clip model (``create_model(..., pretrained=PATH)``
loads strictly), and importing means taking it back out. For the MIM
teacher, which runs open_clip's plain ``VisionTransformer``, the tower is
rewritten in that architecture by :func:`to_open_clip_vision_transformer`.
"""
import math
import re
from typing import List, Mapping, Optional, Tuple

import torch

from eva_mm.models.backbones.eva_vit import EVAViT
from .errors import CONVERTER, CheckpointError
from .eva01 import convert_timm_eva
from .reading import unwrap_state_dict
from .registry import src_format_hint
from .resizing import resize_checkpoint
from .state_dict import StateDict, compare_state_dicts, rename_prefix

# Where a CLIP model keeps its image tower: the BAAI EVA-CLIP release and
# open_clip's own VisionTransformer under 'visual.', open_clip's timm
# towers (EVA01-g-14) one level down, in the timm model 'trunk'.
VISUAL_PREFIX = 'visual.'
TRUNK_PREFIX = VISUAL_PREFIX + 'trunk.'
# The projection of a timm tower: the trunk's classifier when the config has
# no extra projection (EVA01-g-14), else the head open_clip adds.
_TRUNK_PROJ = TRUNK_PREFIX + 'head.'
_LINEAR_PROJ = VISUAL_PREFIX + 'head.proj.'
# The text tower of open_clip's CLIP class (CustomTextCLIP nests it in text.).
_CLIP_TEXT_KEY = re.compile(
    r'^(text_projection|positional_embedding|token_embedding\.|transformer\.'
    r'|ln_final\.)')


def _clip_weights(clip_state: Mapping) -> StateDict:
    """A whole open_clip state dict, also from a checkpoint of the tower."""
    state = unwrap_state_dict(clip_state)
    # open_clip's create_model(pretrained_image_path=...) takes the tower
    # alone, with keys relative to ``visual``.
    if any(key.startswith('trunk.') for key in state):
        state = {VISUAL_PREFIX + key: value for key, value in state.items()}
    return state


def projection_keys(clip_state: Mapping[str, torch.Tensor]) -> List[str]:
    """The keys of the image projection of an open_clip timm-tower model."""
    for prefix in (_TRUNK_PROJ, _LINEAR_PROJ):
        keys = sorted(key for key in clip_state if key.startswith(prefix))
        if keys:
            return keys
    return []


def open_clip_to_eva_vit(
        clip_state: Mapping) -> Tuple[StateDict, StateDict]:
    """Take the EVA vision tower out of an open_clip EVA CLIP checkpoint.

    Args:
        clip_state: An open_clip state dict (``visual.trunk.*``, text tower,
            ``logit_scale``), possibly wrapped (``'state_dict'``) or with
            DDP's ``'module.'`` prefix as open_clip's training saves it, or
            the vision tower alone (``trunk.*``).

    Returns:
        The EVAViT weights (fp32, token pooling: ``norm``, no ``fc_norm``)
        and the image projection as ``{'weight': (D, C), 'bias': (D,)}``
        (no bias for a ``timm_proj: linear`` tower).

    Raises:
        CheckpointError: If there is no timm EVA-01 tower in the checkpoint.
    """
    state = _clip_weights(clip_state)
    trunk = rename_prefix(state, TRUNK_PREFIX)
    if not trunk:
        plain = any(key.startswith(VISUAL_PREFIX + 'conv1.') for key in state)
        official = any(
            key.startswith(VISUAL_PREFIX + 'blocks.') for key in state)
        raise CheckpointError(
            'No visual.trunk.* weights: this is not an open_clip model with '
            'a timm (EVA) vision tower'
            + (' but one with open_clip\'s own VisionTransformer '
               '(visual.conv1, ...), which is not EVA.' if plain else
               ' but the BAAI EVA-CLIP release layout (visual.blocks.*): '
               f'convert it with {CONVERTER} '
               f'{src_format_hint("official-clip")} [--vision-only].'
               if official else '.'))
    projection = {
        key.rsplit('.', 1)[1]: state[key].float()
        for key in projection_keys(state)
    }
    return convert_timm_eva(trunk), projection


def _fit_grid(backbone: StateDict,
              trunk: Mapping[str, torch.Tensor]) -> StateDict:
    """Resize the kernel and position grid to the tower's, when they differ.

    A backbone exported for another resolution (a 336 px classifier, a
    patch-16 detector) then initialises the 224 px patch-14 CLIP tower.
    """
    if 'pos_embed' not in backbone or 'pos_embed' not in trunk:
        return backbone
    kernel = trunk['patch_embed.proj.weight'].shape[-2:]
    num_patches = trunk['pos_embed'].shape[1] - 1
    side = math.isqrt(num_patches)
    if side * side != num_patches:
        return backbone  # left for the shape check to report
    return resize_checkpoint(
        backbone,
        patch_size=tuple(kernel),
        img_size=(side * kernel[0], side * kernel[1]))


def eva_vit_to_open_clip(
        backbone: Mapping[str, torch.Tensor],
        clip_state: Mapping,
        projection: Optional[Mapping[str, torch.Tensor]] = None
) -> StateDict:
    """Put EVAViT weights into the state dict of an open_clip EVA model.

    Args:
        backbone: EVAViT weights with the cls token and the final ``norm``
            (a MIM export or a converted EVA-01 checkpoint).
        clip_state: The state dict of the target open_clip model, e.g.
            ``open_clip.create_model('EVA01-g-14').state_dict()``; every
            entry outside the trunk (text tower, ``logit_scale``) and the
            projection are kept from it.
        projection: ``{'weight', 'bias'}`` to use as the image projection
            instead of the target's (as :func:`open_clip_to_eva_vit`
            returns it).

    Returns:
        A new state dict that ``open_clip.create_model(name,
        pretrained=PATH)`` loads strictly once saved.

    Raises:
        CheckpointError: If the backbone is not EVA-01 or does not fit the
            tower; every missing, unexpected and mis-shaped key is named.
    """
    weights = convert_timm_eva(backbone)
    # A MIM student exported with --keep-mask-token; CLIP has no masking.
    weights.pop('mask_token', None)
    target = _clip_weights(clip_state)
    trunk = {
        key: value
        for key, value in rename_prefix(target, TRUNK_PREFIX).items()
        if not (TRUNK_PREFIX + key).startswith(_TRUNK_PROJ)
    }
    if not trunk:
        raise CheckpointError(
            'The target open_clip model has no timm vision tower '
            '(visual.trunk.*): export to an EVA config such as EVA01-g-14.')
    weights = _fit_grid(weights, trunk)
    report = compare_state_dicts(trunk, weights)
    if not report.fits:
        hints = []
        if 'fc_norm.weight' in report.unexpected or \
                'norm.weight' in report.missing:
            hints.append('EVA CLIP towers pool the cls token after the final '
                         'norm; this backbone was built for average pooling '
                         '(fc_norm): export one with final_norm=True.')
        if report.mismatched:
            hints.append('Pick the open_clip config of the backbone\'s size '
                         '(EVA01-g-14 for EVA-g) or write one whose '
                         'timm_model_name has this width and depth.')
        raise CheckpointError(
            'The backbone does not fit the open_clip tower: missing '
            f'{list(report.missing)}, unexpected {list(report.unexpected)}, '
            f'mis-shaped {list(report.mismatched)}.'
            + ''.join(f' {hint}' for hint in hints))

    exported = dict(target)
    for key, value in weights.items():
        exported[TRUNK_PREFIX + key] = value.to(trunk[key].dtype)
    if projection is not None:
        keys = projection_keys(target)
        expected = {key.rsplit('.', 1)[1]: key for key in keys}
        if set(projection) != set(expected):
            raise CheckpointError(
                f'The projection has {sorted(projection)}, the tower '
                f'{sorted(expected)} ({keys}).')
        for name, key in expected.items():
            if projection[name].shape != target[key].shape:
                raise CheckpointError(
                    f'Projection {name} of shape '
                    f'{list(projection[name].shape)} does not fit {key} '
                    f'{list(target[key].shape)}.')
            exported[key] = projection[name].to(target[key].dtype)
    return exported


def copy_text_tower(clip_state: Mapping[str, torch.Tensor],
                    text_state: Mapping) -> Tuple[StateDict, List[str]]:
    """Initialise the text tower from another CLIP checkpoint.

    The paper's EVA CLIP starts its text encoder from OpenAI CLIP-L's. Every
    text weight whose name and shape agree is copied; the others (e.g.
    ``text_projection``, whose output width is the image projection's) keep
    the target's initialisation, and so do ``logit_scale`` and the vision
    tower.

    Args:
        clip_state: The state dict being exported, with open_clip's
            ``CustomTextCLIP`` names (``text.*``, as EVA01-g-14) or
            ``CLIP``'s top-level text names.
        text_state: An open_clip state dict holding a text tower, in either
            layout, e.g. ``create_model('ViT-L-14', 'openai').state_dict()``.

    Returns:
        The new state dict and the target's text keys that were not copied.

    Raises:
        CheckpointError: If not a single text weight could be copied.
    """
    from open_clip.model import convert_to_custom_text_state_dict
    source = unwrap_state_dict(text_state)
    custom = any(key.startswith('text.') for key in clip_state)
    if custom:
        # Moves the top-level text weights of a CLIP under 'text.'.
        source = convert_to_custom_text_state_dict(source)
    text_keys = [
        key for key in clip_state
        if (key.startswith('text.') if custom else _CLIP_TEXT_KEY.match(key))
    ]
    result = dict(clip_state)
    kept = []
    for key in text_keys:
        if key in source and source[key].shape == clip_state[key].shape:
            result[key] = source[key].to(clip_state[key].dtype)
        else:
            kept.append(key)
    if len(kept) == len(text_keys):
        raise CheckpointError(
            'No text tower weight of the text checkpoint fits the model '
            f'(it has e.g. {sorted(source)[:5]}).')
    return result, kept


def to_open_clip_vision_transformer(
        backbone: Mapping[str, torch.Tensor],
        projection: Mapping[str, torch.Tensor],
        num_heads: int,
        norm_eps: float = 1e-6) -> Tuple[dict, StateDict]:
    """Rewrite an EVA CLIP tower as open_clip's own ``VisionTransformer``.

    :class:`~eva_mm.models.OpenCLIPTeacher` (the MIM teacher) runs
    open_clip's plain ``VisionTransformer`` and projects every patch token
    with its bias-free ``proj``; EVA-01 is that architecture with three
    differences, each rewritten exactly: the patch embedding's bias (a
    constant added to every patch token) moves into the patch rows of the
    position embedding; attention's missing key bias becomes zeros in
    ``in_proj_bias``; and the projection's bias ``b`` moves into
    ``ln_post``'s bias as the minimum-norm ``d`` with ``W d = b``, so that
    ``(x + d) W^T = x W^T + b`` for every token (exact when ``W`` has full
    row rank, as a projection to a narrower space does).

    Args:
        backbone: EVAViT weights with the cls token and the final ``norm``,
            without layer scale (EVA-01's giant has none).
        projection: ``{'weight': (E, C)}`` and optionally ``'bias'``, as
            :func:`open_clip_to_eva_vit` returns it.
        num_heads: Attention heads of the model (16 for EVA-g), which the
            weights do not tell.
        norm_eps: The LayerNorm epsilon of the EVA model.

    Returns:
        The open_clip model config (``embed_dim``, ``vision_cfg``) for
        ``OpenCLIPTeacher(model_cfg=...)`` and the tower's state dict.

    Raises:
        CheckpointError: For layer scale or relative positions, which the
            plain tower lacks, or a bias that ``W`` cannot reproduce.
    """
    weights = convert_timm_eva(backbone)
    weights.pop('mask_token', None)
    problems = sorted(
        key for key in weights if key.rsplit('.', 1)[-1] in
        EVAViT.LAYER_SCALES + EVAViT.REL_POS_TABLES)
    problems += [
        f'no {key}' for key in ('cls_token', 'pos_embed', 'norm.weight')
        if key not in weights
    ]
    if problems:
        raise CheckpointError(
            'Only a plain EVA-01 tower (cls token, position embedding, final '
            f'norm, no layer scale or relative positions) fits: {problems}.')
    kernel = weights['patch_embed.proj.weight']
    width, patch = kernel.shape[0], kernel.shape[-1]
    num_layers = 1 + max(
        int(key.split('.')[1]) for key in weights if key.startswith('blocks.'))
    grid = math.isqrt(weights['pos_embed'].shape[1] - 1)

    weight = projection['weight'].double()
    shift = torch.zeros(width, dtype=torch.float64)
    if 'bias' in projection:
        bias = projection['bias'].double()
        shift = torch.linalg.pinv(weight) @ bias
        error = (weight @ shift - bias).abs().max().item()
        if error > 1e-6 * max(bias.abs().max().item(), 1.0):
            raise CheckpointError(
                f'The projection bias cannot be moved into ln_post (residual '
                f'{error:.2e}): the projection is not of full row rank.')

    pos_embed = weights['pos_embed'][0].clone()
    pos_embed[1:] += weights['patch_embed.proj.bias']
    tower = {
        'conv1.weight': kernel,
        'class_embedding': weights['cls_token'][0, 0],
        'positional_embedding': pos_embed,
        'ln_post.weight': weights['norm.weight'],
        'ln_post.bias': (weights['norm.bias'].double() + shift).float(),
        'proj': projection['weight'].t().contiguous(),
    }
    for i in range(num_layers):
        src, dst = f'blocks.{i}.', f'transformer.resblocks.{i}.'
        q_bias = weights[src + 'attn.q_bias']
        tower.update({
            dst + 'ln_1.weight': weights[src + 'norm1.weight'],
            dst + 'ln_1.bias': weights[src + 'norm1.bias'],
            # nn.MultiheadAttention stacks q, k, v as EVA's qkv does.
            dst + 'attn.in_proj_weight': weights[src + 'attn.qkv.weight'],
            dst + 'attn.in_proj_bias': torch.cat([
                q_bias, torch.zeros_like(q_bias),
                weights[src + 'attn.v_bias']
            ]),
            dst + 'attn.out_proj.weight': weights[src + 'attn.proj.weight'],
            dst + 'attn.out_proj.bias': weights[src + 'attn.proj.bias'],
            dst + 'ln_2.weight': weights[src + 'norm2.weight'],
            dst + 'ln_2.bias': weights[src + 'norm2.bias'],
            dst + 'mlp.c_fc.weight': weights[src + 'mlp.fc1.weight'],
            dst + 'mlp.c_fc.bias': weights[src + 'mlp.fc1.bias'],
            dst + 'mlp.c_proj.weight': weights[src + 'mlp.fc2.weight'],
            dst + 'mlp.c_proj.bias': weights[src + 'mlp.fc2.bias'],
        })
    mlp_hidden = weights['blocks.0.mlp.fc1.weight'].shape[0]
    model_cfg = dict(
        embed_dim=projection['weight'].shape[0],
        vision_cfg=dict(
            image_size=grid * patch,
            patch_size=patch,
            width=width,
            layers=num_layers,
            head_width=width // num_heads,
            mlp_ratio=mlp_hidden / width,
            no_ln_pre=True,
            norm_kwargs=dict(eps=norm_eps)))
    return model_cfg, tower
