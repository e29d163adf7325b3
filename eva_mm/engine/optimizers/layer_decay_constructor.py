"""Layer-wise learning-rate decay for EVAViT, the BEiT/EVA fine-tuning rule."""
from typing import Dict, FrozenSet, List, Optional, Sequence, Tuple

import torch.nn as nn
from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor

from eva_mm.registry import OPTIM_WRAPPER_CONSTRUCTORS

@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class LayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """Param groups with a learning rate that decays from the head down.

    A parameter at layer ``i`` of ``L`` layers gets
    ``lr = base_lr * layer_decay_rate ** (L - 1 - i)``. The layer ids come
    only from the backbone's ``get_layer_depth(param_name, prefix)`` (see
    :meth:`eva_mm.models.EVAViT.get_layer_depth`), so every task shares one
    rule: embeddings are layer 0, block ``k`` is layer ``k + 1`` and the
    final norm and everything outside the backbone (necks, heads) is the
    last layer, at the full learning rate. ``layer_zero_prefixes`` moves
    chosen modules outside the backbone to layer 0 (the official EVA
    segmentation constructor does so for the Mask2Former head's query,
    level, class and mask embeddings).

    Weight decay is ``weight_decay`` of the optimizer config except for
    1-D parameters (norms, layer scales, ``q_bias``/``v_bias``), biases and
    the parameters the backbone declares in ``no_weight_decay()`` (timm's
    API; :meth:`eva_mm.models.EVAViT.no_weight_decay`: position embedding,
    cls and mask tokens, relative position tables), or instead those named
    in ``no_decay_names``, which get 0. The official
    EVA-g detection configs decay every parameter
    (``weight_decay_norm=None, overrides={}`` in EVA-01
    ``det/projects/ViTDet/configs/COCO/cascade_mask_rcnn_vitdet_eva.py``):
    ``no_decay_1d=False, no_decay_names=()``.

    Each trainable parameter lands in exactly one group, one group per
    (layer, decay or not); parameters with ``requires_grad=False`` are left
    out of the optimizer. Every group carries ``param_names``, ``layer_id``
    and ``lr_scale`` for inspection.

    ``paramwise_cfg`` keys:

    - ``layer_decay_rate`` (float, required): the decay per layer, in
      (0, 1], e.g. 0.9 for EVA-L fine-tuning.
    - ``backbone_prefix`` (str): where the backbone sits in the model,
      default ``'backbone.'``. When the model has no such submodule but has
      ``get_layer_depth`` itself, the model is the backbone and the prefix
      is ``''``.
    - ``no_decay_names`` (sequence of str): parameter names (the last
      component of the dotted name, anywhere in the model) without weight
      decay, instead of the backbone's ``no_weight_decay()``; default
      unset.
    - ``no_decay_1d`` (bool): exempt 1-D parameters and biases from weight
      decay; default ``True``.
    - ``layer_zero_prefixes`` (sequence of str): full dotted names of
      modules or parameters (e.g. ``'decode_head.query_embed'``) whose
      parameters are at layer 0, the lowest lr, wherever they are; default
      none. EVA-01 segmentation: ``decode_head.{mask_embed, cls_embed,
      level_embed, query_embed, query_feat}`` (official
      ``seg/mmcv_custom/layer_decay_optimizer_constructor.py:17-38``).

    Example:
        >>> optim_wrapper = dict(
        ...     optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05),
        ...     constructor='eva_mm.LayerDecayOptimWrapperConstructor',
        ...     paramwise_cfg=dict(layer_decay_rate=0.9))

    Args:
        optim_wrapper_cfg: The optimizer wrapper config, with ``optimizer``.
        paramwise_cfg: The options above.
    """

    KNOWN_KEYS = ('layer_decay_rate', 'backbone_prefix', 'no_decay_names',
                  'no_decay_1d', 'layer_zero_prefixes')

    def __init__(self,
                 optim_wrapper_cfg: dict,
                 paramwise_cfg: Optional[dict] = None) -> None:
        super().__init__(optim_wrapper_cfg, paramwise_cfg)
        unknown = sorted(set(self.paramwise_cfg) - set(self.KNOWN_KEYS))
        if unknown:
            # Options of other constructors (mmdet's num_layers, mmengine's
            # custom_keys, bias_decay_mult...) would be silently ignored here;
            # the layer count comes from the backbone instead.
            raise KeyError(
                f'LayerDecayOptimWrapperConstructor does not support '
                f'paramwise_cfg keys {unknown}; it takes {self.KNOWN_KEYS} '
                'and reads the number of layers from the backbone.')
        if 'layer_decay_rate' not in self.paramwise_cfg:
            raise KeyError("paramwise_cfg needs 'layer_decay_rate'.")
        self.layer_decay_rate = float(self.paramwise_cfg['layer_decay_rate'])
        if not 0 < self.layer_decay_rate <= 1:
            raise ValueError('layer_decay_rate must be in (0, 1], got '
                             f'{self.layer_decay_rate}.')
        self.backbone_prefix: str = self.paramwise_cfg.get(
            'backbone_prefix', 'backbone.')
        names = self.paramwise_cfg.get('no_decay_names')
        self.no_decay_names: Optional[FrozenSet[str]] = (
            None if names is None else frozenset(names))
        self.no_decay_1d = bool(self.paramwise_cfg.get('no_decay_1d', True))
        prefixes = self.paramwise_cfg.get('layer_zero_prefixes', ())
        if isinstance(prefixes, str):
            raise TypeError('layer_zero_prefixes takes a sequence of names, '
                            f'got the string {prefixes!r}; write '
                            f'({prefixes!r}, ).')
        self.layer_zero_prefixes = tuple(prefixes)

    def _find_backbone(self, model: nn.Module) -> Tuple[nn.Module, str]:
        """The module that owns ``get_layer_depth`` and its name prefix."""
        prefix = self.backbone_prefix
        if prefix:
            try:
                backbone = model.get_submodule(prefix.rstrip('.'))
            except AttributeError:
                backbone = None
            if backbone is not None and hasattr(backbone, 'get_layer_depth'):
                return backbone, prefix
        if hasattr(model, 'get_layer_depth'):
            return model, ''
        raise TypeError(
            f'{type(model).__name__} has no backbone with get_layer_depth at '
            f'{prefix!r} and no get_layer_depth itself; set '
            'paramwise_cfg.backbone_prefix to where the EVAViT backbone is.')

    def _at_layer_zero(self, name: str) -> bool:
        # Whole dotted components only: 'decode_head.query_embed' is not a
        # prefix of 'decode_head.query_embedding.weight'.
        return any(name == prefix or name.startswith(prefix + '.')
                   for prefix in self.layer_zero_prefixes)

    def _declared_no_decay(self, backbone: nn.Module,
                           prefix: str) -> FrozenSet[str]:
        """The full names of the parameters the backbone exempts."""
        if not hasattr(backbone, 'no_weight_decay'):
            raise TypeError(
                f'{type(backbone).__name__} does not declare its parameters '
                'without weight decay (no_weight_decay()); name them in '
                "paramwise_cfg.no_decay_names, e.g. ('pos_embed', "
                "'cls_token'), or () for none.")
        return frozenset(prefix + name for name in backbone.no_weight_decay())

    def _no_decay(self, name: str, ndim: int,
                  declared: FrozenSet[str]) -> bool:
        leaf = name.rsplit('.', 1)[-1]
        if self.no_decay_1d and (ndim <= 1 or leaf == 'bias'):
            return True
        if self.no_decay_names is not None:
            return leaf in self.no_decay_names
        return name in declared

    def add_params(self,
                   params: List[dict],
                   module: nn.Module,
                   prefix: str = '',
                   is_dcn_module: Optional[float] = None) -> None:
        """Fill ``params`` with one group per (layer, weight decay or not).

        Args:
            params: The list of param groups, filled in place.
            module: The whole model (already unwrapped from DDP by
                :meth:`__call__`).
            prefix: Unused; names are taken relative to ``module``.
            is_dcn_module: Unused; part of the parent's signature.
        """
        backbone, backbone_prefix = self._find_backbone(module)
        declared = frozenset() if self.no_decay_names is not None else \
            self._declared_no_decay(backbone, backbone_prefix)
        names = [name for name, _ in module.named_parameters()]
        unmatched = [
            prefix for prefix in self.layer_zero_prefixes
            if not any(name == prefix or name.startswith(prefix + '.')
                       for name in names)
        ]
        if unmatched:
            # A typo would otherwise leave those modules at the full lr.
            raise KeyError(
                f'layer_zero_prefixes {unmatched} match no parameter of '
                f'{type(module).__name__}; give full dotted module names '
                "such as 'decode_head.query_embed'.")
        groups: Dict[Tuple[int, bool], dict] = {}
        num_layers = None
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            layer_id, num_layers = backbone.get_layer_depth(
                name, backbone_prefix)
            if self._at_layer_zero(name):
                layer_id = 0
            no_decay = self._no_decay(name, param.ndim, declared)
            group = groups.get((layer_id, no_decay))
            if group is None:
                scale = self.layer_decay_rate**(num_layers - 1 - layer_id)
                group = dict(
                    params=[],
                    param_names=[],
                    lr=self.base_lr * scale,
                    lr_scale=scale,
                    layer_id=layer_id,
                    group_name=f'layer_{layer_id}_'
                    f'{"no_decay" if no_decay else "decay"}')
                if self.base_wd is not None:
                    group['weight_decay'] = 0. if no_decay else self.base_wd
                groups[(layer_id, no_decay)] = group
            group['params'].append(param)
            group['param_names'].append(name)
        params.extend(groups[key] for key in sorted(groups))
        self._log_groups(params, num_layers)

    def _log_groups(self, groups: Sequence[dict],
                    num_layers: Optional[int]) -> None:
        lines = [
            f'Layer-wise lr decay: rate {self.layer_decay_rate}, '
            f'{num_layers} layers, {len(groups)} param groups',
            f'{"group":<22}{"lr scale":>10}{"weight decay":>14}'
            f'{"tensors":>9}{"params":>12}'
        ]
        for group in groups:
            numel = sum(p.numel() for p in group['params'])
            decay = group.get('weight_decay', '-')
            lines.append(f'{group["group_name"]:<22}{group["lr_scale"]:>10.4g}'
                         f'{decay:>14}{len(group["params"]):>9}{numel:>12}')
        print_log('\n'.join(lines), logger='current')
