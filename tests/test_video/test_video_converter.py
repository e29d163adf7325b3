"""``convert_eva.py --src-format official-video``: official EVA-01 video
checkpoints (eva_video_k722/k400/...) into the Recognizer3D configs."""
import importlib.util
from pathlib import Path
from typing import Dict

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.registry import init_default_scope

from eva_mm.checkpoints.errors import CheckpointError
from eva_mm.checkpoints.converters import SRC_FORMATS, check_fits_config

ROOT = Path(__file__).parents[2]
K722 = str(ROOT / 'configs/video/eva-g-p14_k722-intermediate-ft_8x224.py')
K400 = str(ROOT / 'configs/video/eva-g-p14_k722-pre_k400-ft_16x224.py')
spec = importlib.util.spec_from_file_location(
    'convert_eva', ROOT / 'tools/model_converters/convert_eva.py')
convert_eva = importlib.util.module_from_spec(spec)
spec.loader.exec_module(convert_eva)

# A tiny model of the official layout: width 32, 2 blocks, MLP 64, patch 14
# at 28 px (2 x 2 patches per frame), 8 frames, the 722 K-722 classes.
TINY = dict(embed_dims=32, num_layers=2, num_heads=2, mlp_hidden_dim=64)
TINY_OPTIONS = {
    'model.backbone.arch': dict(TINY, _delete_=True),
    'model.backbone.img_size': 28,
    'model.backbone.patch_size': 14,
    'model.backbone.init_cfg': None,
    'model.backbone.with_cp': False,
    'model.cls_head.in_channels': 32,
}


pytestmark = pytest.mark.registry_scope('mmaction')


def official_video_layout(width: int,
                          depth: int,
                          mlp: int,
                          frames: int,
                          grid: int,
                          classes: int,
                          device: str = 'cpu') -> Dict[str, torch.Tensor]:
    """Names and shapes of the official video ViT (EVA-01/video/models/
    beit.py:386-466: PatchEmbed3D kernel (1, 14, 14), a (1 + T*H'*W')
    position table, qkv without bias plus q/v biases, fc_norm under mean
    pooling, linear head), random values."""
    shapes = {
        'cls_token': (1, 1, width),
        'pos_embed': (1, 1 + frames * grid * grid, width),
        'patch_embed.proj.weight': (width, 3, 1, 14, 14),
        'patch_embed.proj.bias': (width, ),
        'fc_norm.weight': (width, ),
        'fc_norm.bias': (width, ),
        'head.weight': (classes, width),
        'head.bias': (classes, ),
    }
    for i in range(depth):
        block = {
            'norm1.weight': (width, ),
            'norm1.bias': (width, ),
            'attn.q_bias': (width, ),
            'attn.v_bias': (width, ),
            'attn.qkv.weight': (3 * width, width),
            'attn.proj.weight': (width, width),
            'attn.proj.bias': (width, ),
            'norm2.weight': (width, ),
            'norm2.bias': (width, ),
            'mlp.fc1.weight': (mlp, width),
            'mlp.fc1.bias': (mlp, ),
            'mlp.fc2.weight': (width, mlp),
            'mlp.fc2.bias': (width, ),
        }
        shapes.update({f'blocks.{i}.{k}': v for k, v in block.items()})
    if device == 'meta':
        return {k: torch.empty(v, device='meta') for k, v in shapes.items()}
    generator = torch.Generator().manual_seed(0)
    return {k: torch.randn(v, generator=generator) for k, v in shapes.items()}


def _tiny_recognizer(config: str) -> torch.nn.Module:
    import eva_mm  # noqa: F401  (registers the eva_mm scope)
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(TINY_OPTIONS)
    init_default_scope('mmaction')
    from mmaction.registry import MODELS
    return MODELS.build(cfg.model).eval()


def test_official_video_checkpoint_loads_strictly_unchanged(tmp_path):
    source = official_video_layout(32, 2, 64, frames=8, grid=2, classes=722)
    src, dst = tmp_path / 'eva_video_k722.pth', tmp_path / 'k722.pth'
    # As utils/tools.py:49-57 saves it: the weights under 'model', fp16
    # where DeepSpeed/apex left them.
    torch.save(dict(model={
        k: v.half()
        for k, v in source.items()
    }, epoch=39), src)
    convert_eva.main(['--src-format', 'official-video', str(src), str(dst)])
    converted = torch.load(dst, weights_only=True)
    assert converted['meta']['num_classes'] == 722
    assert converted['meta']['pos_embed_tokens'] == 8 * 4
    weights = converted['state_dict']

    check_fits_config(weights, K722, TINY_OPTIONS)
    model = _tiny_recognizer(K722)
    model.load_state_dict(weights, strict=True)
    # Every source tensor, in the model, unchanged (fp16 values cast up).
    model_state = model.state_dict()
    assert len(model_state) == len(source)
    for key, value in source.items():
        target = ('cls_head.fc_cls.' + key[len('head.'):]
                  if key.startswith('head.') else 'backbone.' + key)
        torch.testing.assert_close(model_state[target],
                                   value.half().float(),
                                   rtol=0,
                                   atol=0)

    # The token layout as the official forward builds it (beit.py:275-296,
    # 530-536): Conv3d patches flattened in (T, H', W') order, cls first,
    # plus the position table.
    clip = torch.randn(1, 3, 8, 28, 28)
    kernel = source['patch_embed.proj.weight'].half().float()
    bias = source['patch_embed.proj.bias'].half().float()
    patches = F.conv3d(clip, kernel, bias, stride=(1, 14, 14))
    tokens = patches.flatten(2).transpose(1, 2)
    cls = source['cls_token'].half().float()
    expected = torch.cat([cls, tokens], 1) + source['pos_embed'].half().float()
    with torch.no_grad():
        embedded, grid = model.backbone.embed(clip)
    assert grid == (8, 2, 2)
    torch.testing.assert_close(embedded, expected)
    # The head: logits = features @ head.weight.T + head.bias.
    features = torch.randn(3, 32)
    with torch.no_grad():
        logits = model.cls_head(features)
    torch.testing.assert_close(
        logits, features @ source['head.weight'].half().float().T +
        source['head.bias'].half().float())


@pytest.mark.parametrize('config,frames,classes', [(K722, 8, 722),
                                                   (K400, 16, 400)])
def test_full_size_official_layout_fits_the_paper_configs(
        config, frames, classes):
    # EVA-g/14: width 1408, 40 blocks, MLP 6144, 16 x 16 patches at 224.
    source = official_video_layout(1408,
                                   40,
                                   6144,
                                   frames,
                                   16,
                                   classes,
                                   device='meta')
    conversion = SRC_FORMATS['official-video'].convert(source, None)
    assert not conversion.dropped
    check_fits_config(conversion.state_dict, config)


def _refused(tmp_path, weights: Dict[str, torch.Tensor], match: str) -> None:
    src, dst = tmp_path / 'src.pth', tmp_path / 'dst.pth'
    torch.save(dict(model=weights), src)
    with pytest.raises(SystemExit, match=match) as err:
        convert_eva.main(
            ['--src-format', 'official-video',
             str(src), str(dst)])
    # One message, naming the problem and the fix; nothing written.
    assert str(err.value).startswith('convert_eva.py: error: ')
    assert not dst.exists()


def test_wrong_kinds_of_file_are_refused_with_one_error(tmp_path):
    video = official_video_layout(32, 2, 64, frames=8, grid=2, classes=5)
    # An image EVA-01 file: 2-D patch kernel, a spatial position table.
    image = dict(video)
    image['patch_embed.proj.weight'] = torch.randn(32, 3, 14, 14)
    image['pos_embed'] = torch.randn(1, 5, 32)
    _refused(tmp_path, image, "Conv3d of the video model.*--src-format "
             "'official'")
    # Without its head: not a released video classifier.
    headless = {k: v for k, v in video.items() if not k.startswith('head.')}
    _refused(tmp_path, headless, r"lacks \['head.weight', 'head.bias'\]")
    # A checkpoint eva_mm wrote (backbone.* / cls_head.*).
    ours = {'backbone.' + k: v for k, v in video.items()}
    _refused(tmp_path, ours, 'needs no conversion')
    # A foreign parameter inside: another architecture.
    foreign = dict(video)
    foreign['blocks.0.attn.rel_pos_bias.table'] = torch.randn(3, 2)
    _refused(tmp_path, foreign, 'not EVA-01 ViT parameters')


def test_converted_file_of_another_config_is_refused(tmp_path):
    # The K-722 file (8 frames, 722 classes) against the K-400 config: the
    # strict check names the mis-shaped tensors and nothing is written.
    source = official_video_layout(1408, 40, 6144, 8, 16, 722, device='meta')
    conversion = SRC_FORMATS['official-video'].convert(source, None)
    with pytest.raises(CheckpointError, match='pos_embed') as err:
        check_fits_config(conversion.state_dict, K400)
    assert 'cls_head.fc_cls.weight' in str(err.value)


def _yacs_cfg_node_class() -> type:
    """``yacs.config.CfgNode``: the real one if yacs is installed, else a
    class of that module path and that pickled state (a dict subclass with
    the flags in its ``__dict__``, as yacs/config.py defines it)."""
    try:
        from yacs.config import CfgNode
        return CfgNode
    except ImportError:
        pass

    class CfgNode(dict):

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.__dict__['__immutable__'] = False
            self.__dict__['__deprecated_keys__'] = set()
            self.__dict__['__renamed_keys__'] = {}

    CfgNode.__module__ = 'yacs.config'
    CfgNode.__qualname__ = 'CfgNode'
    return CfgNode


def _save_with_fake_yacs(obj: object, path: Path, cfg_node: type) -> None:
    """torch.save with ``cfg_node`` importable as yacs.config.CfgNode, as
    pickle needs; the fake modules are gone afterwards."""
    import sys
    import types
    if cfg_node.__module__ in sys.modules:
        torch.save(obj, path)
        return
    config = types.ModuleType('yacs.config')
    config.CfgNode = cfg_node
    sys.modules.update({'yacs': types.ModuleType('yacs'),
                        'yacs.config': config})
    try:
        torch.save(obj, path)
    finally:
        del sys.modules['yacs'], sys.modules['yacs.config']


def test_official_epoch_saving_file_loads_weights_only(tmp_path):
    """EVA-01/video/utils/tools.py:49-61 saves the whole training state:
    weights, optimizer, timm scheduler, apex amp state and the yacs config
    (frozen, nested). It loads with weights_only=True through the stand-in
    for CfgNode alone and converts like a plain file."""
    import pickle

    from timm.scheduler import CosineLRScheduler

    from eva_mm.checkpoints.reading import load_state_dict_file
    cfg_node = _yacs_cfg_node_class()
    config = cfg_node({
        'MODEL': cfg_node({'ARCH': 'eva-g/14', 'DROP_PATH_RATE': 0.4}),
        'DATA': cfg_node({'NUM_FRAMES': 8, 'INPUT_SIZE': 224,
                          'LABEL_LIST': 'labels/k722.csv'}),
        'TRAIN': cfg_node({'LR': 8e-6, 'EPOCHS': 40, 'OPT_LEVEL': 'O1'}),
        'SEED': 1024,
    })
    config.__dict__['__immutable__'] = True  # config.freeze()
    source = official_video_layout(32, 2, 64, frames=8, grid=2, classes=722)
    head = torch.nn.Parameter(source['head.weight'].clone())
    optimizer = torch.optim.AdamW([head], lr=8e-6)
    head.grad = torch.ones_like(head)
    optimizer.step()
    scheduler = CosineLRScheduler(optimizer, t_initial=100, lr_min=8e-8,
                                  warmup_lr_init=0, warmup_t=10,
                                  cycle_limit=1, t_in_epochs=False)
    save_state = {'model': source,
                  'optimizer': optimizer.state_dict(),
                  'lr_scheduler': scheduler.state_dict(),
                  'max_accuracy': 83.2,
                  'epoch': 39,
                  'amp': {'loss_scaler0': {'loss_scale': 65536.0,
                                           'unskipped': 12}},
                  'config': config}
    src, dst = tmp_path / 'ckpt_epoch_39.pth', tmp_path / 'k722.pth'
    _save_with_fake_yacs(save_state, src, cfg_node)

    # Plain weights_only refuses the yacs global...
    with pytest.raises(pickle.UnpicklingError, match='yacs.config.CfgNode'):
        torch.load(src, weights_only=True)
    # ...the reader's stand-in takes it, and the weights come out whole.
    weights = load_state_dict_file(src)
    assert weights.keys() == source.keys()
    for key, value in source.items():
        assert torch.equal(weights[key], value), key
    convert_eva.main(['--src-format', 'official-video', str(src), str(dst)])
    converted = torch.load(dst, weights_only=True)['state_dict']
    assert torch.equal(converted['cls_head.fc_cls.weight'],
                       source['head.weight'])


def test_other_yacs_globals_stay_refused(tmp_path):
    """The stand-in admits the one class name: a function of the same
    module (here one that would write a file) is still refused."""
    import sys
    import types

    from eva_mm.checkpoints.reading import load_state_dict_file
    marker = tmp_path / 'ran'

    def load_cfg(path: str) -> dict:
        Path(path).write_text('code ran')
        return {}

    load_cfg.__module__, load_cfg.__qualname__ = 'yacs.config', 'load_cfg'

    class Payload:

        def __reduce__(self):
            return load_cfg, (str(marker), )

    config = types.ModuleType('yacs.config')
    config.load_cfg = load_cfg
    sys.modules.update({'yacs': types.ModuleType('yacs'),
                        'yacs.config': config})
    try:
        torch.save({'model': {'w': torch.zeros(1)}, 'config': Payload()},
                   tmp_path / 'evil.pth')
    finally:
        del sys.modules['yacs'], sys.modules['yacs.config']
    with pytest.raises(CheckpointError, match='yacs.config.load_cfg'):
        load_state_dict_file(tmp_path / 'evil.pth')
    assert not marker.exists()
