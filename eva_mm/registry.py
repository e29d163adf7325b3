"""eva_mm's registries.

Each registry is a child of mmengine's root registry of the same kind, under the
scope ``eva_mm``. A config of any OpenMMLab toolbox (mmdet, mmseg, mmaction2,
mmpretrain) then reaches eva_mm components by the scoped name, e.g.
``backbone=dict(type='eva_mm.EVAViT')``, once ``custom_imports`` has imported
``eva_mm``.
"""
from mmengine.registry import DATA_SAMPLERS as MMENGINE_DATA_SAMPLERS
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import \
    OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import STRATEGIES as MMENGINE_STRATEGIES
from mmengine.registry import \
    WEIGHT_INITIALIZERS as MMENGINE_WEIGHT_INITIALIZERS
from mmengine.registry import Registry

MODELS = Registry(
    'model', parent=MMENGINE_MODELS, scope='eva_mm',
    locations=['eva_mm.models'])
DATASETS = Registry(
    'dataset', parent=MMENGINE_DATASETS, scope='eva_mm',
    locations=['eva_mm.datasets'])
DATA_SAMPLERS = Registry(
    'data sampler', parent=MMENGINE_DATA_SAMPLERS, scope='eva_mm',
    locations=['eva_mm.datasets'])
TRANSFORMS = Registry(
    'transform', parent=MMENGINE_TRANSFORMS, scope='eva_mm',
    locations=['eva_mm.datasets'])
METRICS = Registry(
    'metric', parent=MMENGINE_METRICS, scope='eva_mm',
    locations=['eva_mm.evaluation'])
HOOKS = Registry(
    'hook', parent=MMENGINE_HOOKS, scope='eva_mm',
    locations=['eva_mm.engine'])
OPTIM_WRAPPER_CONSTRUCTORS = Registry(
    'optimizer wrapper constructor',
    parent=MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS, scope='eva_mm',
    locations=['eva_mm.engine'])
OPTIM_WRAPPERS = Registry(
    'optim_wrapper', parent=MMENGINE_OPTIM_WRAPPERS, scope='eva_mm',
    locations=['eva_mm.engine'])
STRATEGIES = Registry(
    'strategy', parent=MMENGINE_STRATEGIES, scope='eva_mm',
    locations=['eva_mm.engine'])
# The strict pretrained loader: EVAViT reaches it by name, so that the
# models never import eva_mm.checkpoints (which imports the models).
WEIGHT_INITIALIZERS = Registry(
    'weight initializer', parent=MMENGINE_WEIGHT_INITIALIZERS,
    scope='eva_mm', locations=['eva_mm.checkpoints.loading'])
