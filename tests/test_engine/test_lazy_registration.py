"""``import eva_mm`` imports no toolbox, and every registered eva_mm name is
still found by its scoped name from any toolbox's registry.

Run in a fresh interpreter: in the test process other tests have long
imported eva_mm's subpackages (and with them mmdet and mmseg).
"""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# README's table of registered names, by mmengine root registry.
NAMES = {
    'MODELS': [
        'EVAViT', 'EVAViTAdapter', 'SimpleFPN', 'LN2d', 'LayerNorm2d',
        'Detectron2CascadeRoIHead', 'ProbabilityAveragingCascadeRoIHead',
        'MasknessFCNMaskHead', 'FederatedLoss', 'Mask2FormerEncoderDecoder',
        'PadShortSideSegTTAModel', 'EVAMIM', 'EVAMIMHead', 'OpenCLIPTeacher',
        'OpenCLIPZeroShot', 'VideoLinearHead'
    ],
    'OPTIM_WRAPPER_CONSTRUCTORS': ['LayerDecayOptimWrapperConstructor'],
    'OPTIM_WRAPPERS': ['AutocastOptimWrapper'],
    'STRATEGIES': ['DeepSpeedStrategy'],
    'HOOKS': ['NonFiniteLossHook', 'OfficialCheckpointHook',
              'UnreadableDataHook'],
    'METRICS': ['LVISMetric', 'ClassSubsetAccuracy', 'ReaLAccuracy'],
    'DATASETS': ['LVISV1Dataset', 'ImageNetV2'],
    'DATA_SAMPLERS': ['RepeatFactorSampler'],
    'TRANSFORMS': [
        'EVABlockMaskGenerator', 'VideoInit', 'VideoDecode', 'TSNSample',
        'RandomGrayscale', 'ColorJitter', 'Detectron2RandomCrop'
    ],
    'WEIGHT_INITIALIZERS': ['PretrainedBackbone'],
}
SCRIPT = '''
import json, sys
import eva_mm
toolboxes = ('mmdet', 'mmseg', 'mmpretrain', 'mmaction', 'deepspeed')
after_import = sorted(m for m in toolboxes if m in sys.modules)
from mmengine.registry import init_default_scope
import mmengine.registry as root
init_default_scope('mmdet')  # as a detection config's default_scope
import mmdet.registry as mmdet_registry
found = {}
for registry, names in json.loads(sys.argv[1]).items():
    # From mmdet's registry where it has one of that kind, else the root's.
    lookup = getattr(mmdet_registry, registry, getattr(root, registry))
    found.update({f'{registry}.{name}': lookup.get(f'eva_mm.{name}')
                  .__module__ for name in names})
# Importing every component (eva_mm.engine included) left torch's
# weights-only allow-list alone.
import torch
from mmengine.logging import HistoryBuffer
allowed = [entry[0] if isinstance(entry, tuple) else entry
           for entry in torch.serialization.get_safe_globals()]
print(json.dumps(dict(after_import=after_import, found=found,
                      allow_listed=HistoryBuffer in allowed)))
'''


def test_import_is_light_and_scoped_names_resolve() -> None:
    done = subprocess.run(
        [sys.executable, '-c', SCRIPT, json.dumps(NAMES)], cwd=ROOT,
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result['after_import'] == []
    assert not result['allow_listed']
    found = result['found']
    assert len(found) == sum(len(names) for names in NAMES.values())
    assert all(module.startswith('eva_mm.') for module in found.values())
