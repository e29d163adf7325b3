"""The official EVA-01 backbones from a baaivision/EVA checkout, and the
eva_mm models that compute the same function with their weights.

Pairs of one computation, for ``official_vit_benchmark.py`` and
``tools/gpu_check.py`` (:data:`PAIRS`):

- ``det-b``, ``det-l``, ``det-g``: the official EVA-01 detection ViT
  (``EVA-01/det/detectron2/modeling/backbone/vit.py`` with its ``utils.py``
  and ``backbone.py``) against ``EVAViT``, both in the ViTDet geometry of the
  official configs: patch 16, window attention with a few global blocks,
  decomposed relative positions, no cls token in the sequence, an absolute
  position embedding learned at 224 px with a cls position
  (``pretrain_use_cls_token=True``, resized to the grid), q/v biases
  (``beit_like_qkv_bias``), ``nn.LayerNorm(eps=1e-6)`` (the ViTDet configs'
  ``norm_layer``, EVA-01/det/configs/common/models/mask_rcnn_vitdet.py:
  28, which the EVA configs keep);
- ``adapter-b``: the official ViT-Adapter (``EVA-01/seg/mmseg_custom/models/
  backbones/beit_adapter.py`` with ``base/beit.py``, ``adapter_modules.py``
  and ``EVA-01/seg/ops``) against ``EVAViTAdapter``, ViT-B.

Both models of a pair run with stochastic depth off (with one image, drop
path would drop whole branches at random, differently in each model). The
official model is built with its own initialisation, every parameter is then
perturbed (:func:`randomize`: the zero-initialised rel-pos tables, q/v biases
and injector gammas too), and ``EVAViT`` loads its weights through the
project's converter (:meth:`DetPair.eva_mm_weights`).

The official files import detectron2, fvcore and fairscale (detection) and
mmseg 0.x, mmcv_custom and a compiled deformable-attention extension
(segmentation). While one is imported, small in-memory stand-ins take those
names and are removed again afterwards (:func:`_stand_ins`); each stand-in
of a name the benchmarked backbone never calls raises if called. Two are
functional: fairscale's ``checkpoint_wrapper`` (activation checkpointing,
``use_act_checkpoint``) and the deformable attention's compiled kernels,
replaced by the official code's own PyTorch reference. The official code is
read from the checkout that ``--official-repo`` names, never copied here.
"""
import argparse
import hashlib
import importlib
import importlib.util
import sys
import warnings
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import (Callable, Dict, Iterator, List, Mapping, Optional,
                    Sequence, Tuple, Union)

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from common import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))
from eva_mm.models import EVAViT, EVAViTAdapter  # noqa: E402
from eva_mm.checkpoints.state_dict import StateDict, rename_prefix  # noqa
from eva_mm.checkpoints.converters.detectron2_detector import (  # noqa
    convert_detector)

DET_DIR = 'EVA-01/det/detectron2/modeling/backbone'
SEG_DIR = 'EVA-01/seg'
ADAPTER_DIR = SEG_DIR + '/mmseg_custom/models/backbones'
# The official ViT's pretrain_img_size (vit.py:338), which no EVA config sets.
PRETRAIN_IMG_SIZE = 224


# ----------------------------------------------------------------------
# Importing the official files
# ----------------------------------------------------------------------
def _unused(name: str) -> type:
    """A stand-in for an imported name that the benchmarked backbone never
    calls: a class (so that the official code can subclass it) whose
    construction, i.e. any call, raises."""

    def refuse(self, *args, **kwargs) -> None:
        raise RuntimeError(
            f'{name} is a stand-in of tools/analysis/official_eva.py: the '
            'backbone as benchmarked does not use it.')

    return type(name.rsplit('.', 1)[-1], (nn.Module, ), {'__init__': refuse})


def _checkpoint_wrapper(module: nn.Module) -> nn.Module:
    """fairscale's ``checkpoint_wrapper`` (vit.py:416-417): the same module
    (same state-dict names), its forward recomputed in backward while grad
    is enabled, here with torch's non-reentrant checkpoint (fairscale's is
    reentrant; both keep only the block's input)."""
    # A weak reference, as fairscale's: the module holding its own forward
    # would be a cycle that `del` does not free (a GPU's memory until the
    # next garbage collection).
    module_ref = weakref.ref(module)
    forward = type(module).forward

    def checkpointed(*args, **kwargs):
        block = module_ref()
        if not torch.is_grad_enabled():
            return forward(block, *args, **kwargs)
        return checkpoint(forward, block, *args, use_reentrant=False,
                          **kwargs)

    module.forward = checkpointed
    return module


def _modules(entries: Mapping[str, Dict[str, object]]
             ) -> Dict[str, ModuleType]:
    """In-memory modules with the given attributes, their parent packages
    too, each child an attribute of its parent (``import a.b as c``)."""
    modules: Dict[str, ModuleType] = {}
    for name, attributes in entries.items():
        parts = name.split('.')
        for i in range(1, len(parts) + 1):
            prefix = '.'.join(parts[:i])
            modules.setdefault(prefix, ModuleType(prefix))
        vars(modules[name]).update(attributes)
    for name, module in modules.items():
        if '.' in name:
            parent, child = name.rsplit('.', 1)
            setattr(modules[parent], child, module)
    return modules


@contextmanager
def _stand_ins(entries: Mapping[str, Dict[str, object]]) -> Iterator[None]:
    """Let ``entries`` (module name -> attributes) be what ``import`` finds
    under their top-level names for the duration; afterwards every module
    under those names is dropped and what was there before is restored."""
    roots = {name.split('.')[0] for name in entries}

    def under_roots() -> List[str]:
        return [name for name in sys.modules if name.split('.')[0] in roots]

    saved = {name: sys.modules.pop(name) for name in under_roots()}
    sys.modules.update(_modules(entries))
    try:
        with warnings.catch_warnings():
            # timm.models.layers, which the official files import, is a
            # deprecated alias of timm.layers.
            warnings.simplefilter('ignore', FutureWarning)
            yield
    finally:
        for name in under_roots():
            del sys.modules[name]
        sys.modules.update(saved)


def _checkout_dir(repo: Union[str, Path], folder: str, file: str) -> Path:
    """``repo/folder``, checked to hold ``file``.

    Raises:
        FileNotFoundError: Naming the file and what ``repo`` must be.
    """
    directory = Path(repo).expanduser().resolve() / folder
    if not (directory / file).is_file():
        raise FileNotFoundError(
            f'{directory / file} does not exist: --official-repo must be a '
            'checkout of https://github.com/baaivision/EVA (the folder that '
            f'holds EVA-01/), got {repo}.')
    return directory


def _package_for(directory: Path) -> str:
    """A package, one per official folder, whose modules are that folder's
    files, so that their relative imports work without the folder's
    ``__init__.py`` (which imports the whole of detectron2 / mmseg_custom).
    """
    name = '_eva01_official_' + hashlib.sha1(
        str(directory).encode()).hexdigest()[:10]
    if name not in sys.modules:
        package = ModuleType(name)
        package.__path__ = [str(directory)]
        sys.modules[name] = package
    return name


def load_official_det(repo: Union[str, Path]) -> ModuleType:
    """The official EVA-01 detection ``vit.py`` module of the checkout.

    Args:
        repo: A checkout of baaivision/EVA.

    Returns:
        The module (its ``ViT`` is the backbone).
    """
    directory = _checkout_dir(repo, DET_DIR, 'vit.py')
    entries: Dict[str, Dict[str, object]] = {
        # Only ResBottleneckBlock (residual_block_indexes, none in EVA) and
        # SimpleFeaturePyramid use these.
        'detectron2.layers': {
            name: _unused(f'detectron2.layers.{name}')
            for name in ('CNNBlockBase', 'Conv2d', 'get_norm', 'ShapeSpec')
        },
        'detectron2.modeling.backbone.fpn': {
            '_assert_strides_are_log2_contiguous':
            _unused('detectron2.modeling.backbone.fpn.'
                    '_assert_strides_are_log2_contiguous')
        },
        'fvcore.nn.weight_init': {
            'c2_msra_fill': _unused('fvcore.nn.weight_init.c2_msra_fill')
        },
        'fairscale.nn.checkpoint': {
            'checkpoint_wrapper': _checkpoint_wrapper
        },
    }
    if importlib.util.find_spec('scipy') is None:
        # utils.py imports scipy for the 'beit' rel-pos resize only.
        entries['scipy.interpolate'] = {
            'interp1d': _unused('scipy.interpolate.interp1d')
        }
    package = _package_for(directory)
    with _stand_ins(entries):
        return importlib.import_module(package + '.vit')


class _PyTorchDeformAttn:
    """The official ``MSDeformAttnFunction`` (EVA-01/seg/ops/functions/
    ms_deform_attn_func.py:19-46) without its compiled extension: on CUDA
    mmcv's kernel, the same Deformable-DETR kernel that EVAViTAdapter's
    mmcv attention runs there; elsewhere the same file's PyTorch reference,
    ``ms_deform_attn_core_pytorch`` (:49-71), differentiated by autograd,
    as mmcv's deformable attention runs off CUDA. Under autocast the inputs
    are cast to fp32 and autocast is off, as the function's
    ``custom_fwd(cast_inputs=torch.float32)`` does on CUDA.
    """

    def __init__(self, core: Callable[..., torch.Tensor]) -> None:
        self.core = core

    def apply(self, value: torch.Tensor, shapes: torch.Tensor,
              level_start_index: torch.Tensor, locations: torch.Tensor,
              weights: torch.Tensor, im2col_step: int) -> torch.Tensor:
        device = value.device.type
        if torch.is_autocast_enabled(device):
            with torch.autocast(device, enabled=False):
                return self.apply(value.float(), shapes, level_start_index,
                                  locations.float(), weights.float(),
                                  im2col_step)
        if device == 'cuda':
            from mmcv.ops.multi_scale_deform_attn import \
                MultiScaleDeformableAttnFunction
            return MultiScaleDeformableAttnFunction.apply(
                value, shapes, level_start_index, locations, weights,
                im2col_step)
        return self.core(value, shapes, locations, weights)


def load_official_adapter(repo: Union[str, Path]) -> ModuleType:
    """The official EVA-01 ``beit_adapter.py`` module of the checkout.

    Args:
        repo: A checkout of baaivision/EVA.

    Returns:
        The module (its ``BEiTAdapter`` is the backbone).
    """
    directory = _checkout_dir(repo, ADAPTER_DIR, 'beit_adapter.py')
    ops = _checkout_dir(repo, SEG_DIR + '/ops/functions',
                        'ms_deform_attn_func.py').parent
    registry = SimpleNamespace(
        register_module=lambda *args, **kwargs: (lambda cls: cls))
    entries: Dict[str, Dict[str, object]] = {
        # mmseg 0.x's registry: the classes are built directly here.
        'mmseg.models.builder': {'BACKBONES': registry},
        # Used to load a pretrained file (pretrained=None here).
        'mmseg.utils': {'get_root_logger': _unused('mmseg.utils.'
                                                   'get_root_logger')},
        'mmcv_custom': {'load_checkpoint': _unused('mmcv_custom.'
                                                   'load_checkpoint')},
        # The compiled extension; its Function is replaced below.
        'MultiScaleDeformableAttention': {
            name: _unused(f'MultiScaleDeformableAttention.{name}')
            for name in ('ms_deform_attn_forward', 'ms_deform_attn_backward')
        },
        # The official ops/ folder under its own top-level name.
        'ops': {'__path__': [str(ops)]},
    }
    package = _package_for(directory)
    with _stand_ins(entries):
        module = importlib.import_module(package + '.beit_adapter')
        functions = importlib.import_module(
            'ops.functions.ms_deform_attn_func')
        attention = importlib.import_module('ops.modules.ms_deform_attn')
        attention.MSDeformAttnFunction = _PyTorchDeformAttn(
            functions.ms_deform_attn_core_pytorch)
    return module


# ----------------------------------------------------------------------
# The pairs
# ----------------------------------------------------------------------
def randomize(model: nn.Module, seed: int = 0) -> None:
    """Perturb every parameter by N(0, 0.02) noise drawn on the CPU, so that
    the equality check covers the zero-initialised ones too.

    Args:
        model: The official model, before its weights are handed on.
        seed: Seed of the noise.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            noise = torch.randn(param.shape, generator=generator) * 0.02
            param.add_(noise.to(param))


def output_maps(output: object) -> List[torch.Tensor]:
    """The feature maps of a backbone's output: the official ViT's dict,
    the adapter's list, or eva_mm's tuple."""
    if isinstance(output, dict):
        return list(output.values())
    return list(output)


@dataclass(frozen=True)
class DetPair:
    """A ViTDet detection backbone: the official ``ViT`` vs ``EVAViT``.

    Attributes:
        name: The pair's name on the command line.
        source: Where the official settings are written.
        arch: The ``EVAViT`` arch dict (width, depth, heads, MLP width).
        window: Window size of the window blocks, in patches.
        global_blocks: Indexes of the blocks that attend globally.
        patch: Patch size.
    """
    name: str
    source: str
    arch: Dict[str, int]
    window: int
    global_blocks: Tuple[int, ...]
    patch: int = 16

    def load_official(self, repo: Union[str, Path]) -> ModuleType:
        """The official module this pair's backbone is built from."""
        return load_official_det(repo)

    def size_error(self, img_size: int) -> Optional[str]:
        """Why ``img_size`` does not fit the pair, or ``None``.

        The weight mapping tells window blocks from global ones by their
        rel-pos tables, the window's being the shorter (as in every ViTDet
        config), so the grid must be at least one window.
        """
        if img_size % self.patch or img_size // self.patch < self.window:
            return (f'{self.name} needs an image side that is a multiple of '
                    f'{self.patch} and at least {self.patch * self.window} '
                    '(one window of patches)')
        return None

    def build_official(self, module: ModuleType, img_size: int,
                       with_cp: bool) -> nn.Module:
        """The official ``ViT`` (vit.py:311-454) for ``img_size`` images.

        Args:
            module: :func:`load_official_det`'s module.
            img_size: Side of the (square) input, for the global blocks'
                rel-pos tables (the official ``img_size``).
            with_cp: ``use_act_checkpoint``: every block checkpointed.
        """
        depth, dim = self.arch['num_layers'], self.arch['embed_dims']
        return module.ViT(
            img_size=img_size,
            patch_size=self.patch,
            embed_dim=dim,
            depth=depth,
            num_heads=self.arch['num_heads'],
            mlp_ratio=self.arch['mlp_hidden_dim'] / dim,
            drop_path_rate=0.,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            window_size=self.window,
            window_block_indexes=[
                i for i in range(depth) if i not in self.global_blocks
            ],
            use_rel_pos=True,
            use_act_checkpoint=with_cp,
            pretrain_img_size=PRETRAIN_IMG_SIZE,
            pretrain_use_cls_token=True,
            beit_like_qkv_bias=True)

    def build_eva_mm(self, img_size: int, options: Dict[str, object]
                     ) -> nn.Module:
        """``EVAViT`` with the official model's settings.

        Args:
            img_size: Side of the (square) input.
            options: Further ``EVAViT`` arguments (``with_cp``, ``compile``).
        """
        return EVAViT(
            arch=dict(self.arch),
            img_size=img_size,
            patch_size=self.patch,
            out_type='featmap',
            with_cls_token=False,
            final_norm=False,
            norm_eps=1e-6,
            rel_pos='decomposed',
            window_size=self.window,
            global_block_indexes=self.global_blocks,
            **options)

    def eva_mm_weights(self, official: Mapping[str, torch.Tensor],
                       img_size: int) -> StateDict:
        """The official weights as ``EVAViT`` weights for ``img_size``.

        The backbone part of ``--src-format official-det``
        (:func:`convert_detector` on ``backbone.net.*``): the names are
        EVAViT's already; the 224 px position embedding loses its cls
        position and is resized to the grid as ``get_abs_pos`` does at every
        official forward.

        Args:
            official: The official ``ViT``'s state dict.
            img_size: Side of the input EVAViT is built for.
        """
        conversion = convert_detector(
            {'backbone.net.' + key: value for key, value in official.items()},
            argparse.Namespace(img_size=[img_size], config=None,
                               rel_pos_resize=None))
        return rename_prefix(conversion.state_dict, 'backbone.')


@dataclass(frozen=True)
class AdapterPair:
    """ViT-Adapter segmentation backbones: the official ``BEiTAdapter`` vs
    ``EVAViTAdapter``, global attention with the cls token, no rel-pos.

    Attributes:
        name: The pair's name on the command line.
        source: Where the official settings are written.
        arch: The ``EVAViT`` arch dict (width, depth, heads, MLP width).
        interaction_indexes: Inclusive block ranges of the 4 interactions.
        deform_num_heads: Heads of the deformable attentions.
        patch: Patch size.
    """
    name: str
    source: str
    arch: Dict[str, int]
    interaction_indexes: Tuple[Tuple[int, int], ...]
    deform_num_heads: int
    patch: int = 16

    def load_official(self, repo: Union[str, Path]) -> ModuleType:
        """The official module this pair's backbone is built from."""
        return load_official_adapter(repo)

    def size_error(self, img_size: int) -> Optional[str]:
        """Why ``img_size`` does not fit the pair, or ``None``: the adapter's
        levels have strides up to 32."""
        if img_size % 32:
            return f'{self.name} needs an image side that is a multiple of 32'
        return None

    def build_official(self, module: ModuleType, img_size: int,
                       with_cp: bool) -> nn.Module:
        """The official ``BEiTAdapter`` (beit_adapter.py:21-59), EVA-01's
        settings (EVA-01/seg/configs/ade20k/
        eva_mask2former_896_20k_coco164k2ade20k_ms.py:21-41) at this width.

        Args:
            module: :func:`load_official_adapter`'s module.
            img_size: Side of the input; the official adapter adds its
                position embedding unresized, so inputs must be this size.
            with_cp: Checkpoint the blocks, injectors and extractors.
        """
        dim = self.arch['embed_dims']
        return module.BEiTAdapter(
            img_size=img_size,
            patch_size=self.patch,
            embed_dim=dim,
            depth=self.arch['num_layers'],
            num_heads=self.arch['num_heads'],
            mlp_ratio=self.arch['mlp_hidden_dim'] / dim,
            qkv_bias=True,
            use_abs_pos_emb=True,
            use_rel_pos_bias=False,
            init_values=None,
            drop_path_rate=0.,
            conv_inplane=64,
            n_points=4,
            deform_num_heads=self.deform_num_heads,
            cffn_ratio=0.25,
            deform_ratio=0.5,
            with_cp=with_cp,
            interaction_indexes=[list(r) for r in self.interaction_indexes])

    def build_eva_mm(self, img_size: int, options: Dict[str, object]
                     ) -> nn.Module:
        """``EVAViTAdapter`` with the official model's settings (its other
        defaults are EVA-01's).

        Args:
            img_size: Side of the input.
            options: Further ``EVAViT`` arguments (``with_cp``, ``compile``).
        """
        return EVAViTAdapter(
            arch=dict(self.arch),
            img_size=img_size,
            patch_size=self.patch,
            conv_inplane=64,
            deform_num_heads=self.deform_num_heads,
            interaction_indexes=[list(r) for r in self.interaction_indexes],
            **options)

    def eva_mm_weights(self, official: Mapping[str, torch.Tensor],
                       img_size: int) -> StateDict:
        """The official weights, whose names ``EVAViTAdapter`` keeps
        (``--src-format official-seg`` renames only the decode head)."""
        return dict(official)


Pair = Union[DetPair, AdapterPair]
_VIT_B = dict(embed_dims=768, num_layers=12, num_heads=12,
              mlp_hidden_dim=3072)
PAIRS: Dict[str, Pair] = {
    pair.name: pair
    for pair in (
        DetPair('det-b', 'EVA-01/det/configs/common/models/'
                'mask_rcnn_vitdet.py:18-43', _VIT_B, 14, (2, 5, 8, 11)),
        DetPair('det-l', 'facebookresearch/detectron2 projects/ViTDet/'
                'configs/COCO/mask_rcnn_vitdet_l_100ep.py',
                dict(embed_dims=1024, num_layers=24, num_heads=16,
                     mlp_hidden_dim=4096), 14, (5, 11, 17, 23)),
        # Global attention every 4th block.
        DetPair('det-g', 'EVA-01/det/projects/ViTDet/configs/COCO/'
                'cascade_mask_rcnn_vitdet_eva.py:14-33',
                dict(embed_dims=1408, num_layers=40, num_heads=16,
                     mlp_hidden_dim=6144), 16, tuple(range(3, 40, 4))),
        # eva_mm's ViT-B adapter config (ViT-Adapter's BEiT-Adapter-B:
        # 12 deformable heads, interactions of 3 blocks).
        AdapterPair('adapter-b', 'configs/segmentation/eva-b-p16_vit-'
                    'adapter_mask2former_coco-stuff-pre_20k_ade20k-896.py',
                    _VIT_B, ((0, 2), (3, 5), (6, 8), (9, 11)), 12),
    )
}


def official_with_cp(mode: str) -> bool:
    """The official code's checkpointing for an ``--with-cp`` mode: every
    block, or none (it has no per-part modes)."""
    return mode != 'none'


def eva_mm_with_cp(mode: str) -> Union[bool, str]:
    """``EVAViT(with_cp=...)`` of an ``--with-cp`` mode."""
    return {'none': False, 'all': True}.get(mode, mode)


def same_outputs(official: Sequence[torch.Tensor],
                 eva_mm: Sequence[torch.Tensor]) -> float:
    """Max abs difference of two backbones' feature maps.

    Raises:
        ValueError: If they give other numbers of maps or other shapes.
    """
    shapes = [tuple(t.shape) for t in official]
    if shapes != [tuple(t.shape) for t in eva_mm]:
        raise ValueError(f'The official backbone gives maps of {shapes}, '
                         f'EVAViT of {[tuple(t.shape) for t in eva_mm]}.')
    return max((a.float() - b.float()).abs().max().item()
               for a, b in zip(official, eva_mm))
