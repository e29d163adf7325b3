"""--src-format official-clip: the BAAI EVA-CLIP file for open_clip and
EVAViT, on synthetic files in the official layout.

The official names and shapes are written out here from the official model
code: EVA-01/clip/vit_model.py (vision tower: PatchEmbed, Attention with
q/v biases, Block, VisionTransformer with ``head``) and
EVA-01/clip/eva_model.py (``EVA_CLIP``: ``visual`` and ``text``, the text
tower with its ``logit_scale``).
"""
import math
import sys
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from PIL import Image
from tiny_eva_clip import CLIP_NAME, EMBED_DIM, EVA_ARCH, IMG_SIZE

from eva_mm.engine.cli import build_runner
from eva_mm.models import EVAViT
from eva_mm.models.classifiers.open_clip_zero_shot import openai_mean_std
from eva_mm.checkpoints.loading import load_backbone_checkpoint
from eva_mm.checkpoints.reading import load_state_dict_file

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / 'tools' / 'model_converters'))
import convert_eva  # noqa: E402

TEXT = dict(width=32, heads=2, layers=1, context_length=77,
            vocab_size=49408)


def official_eva_clip(width: int, depth: int, mlp_hidden: int, patch: int,
                      img_size: int, embed_dim: int, text_width: int,
                      text_layers: int, context_length: int = 77,
                      vocab_size: int = 49408,
                      device: str = 'cpu', scale: float = 0.1) -> dict:
    """An ``EVA_CLIP.state_dict()`` of the given sizes, random values
    of std ``scale``."""
    shapes = {
        # vit_model.py:261-287 (use_mean_pooling=False: norm, no fc_norm).
        'visual.cls_token': (1, 1, width),
        'visual.pos_embed': (1, (img_size // patch)**2 + 1, width),
        'visual.patch_embed.proj.weight': (width, 3, patch, patch),
        'visual.patch_embed.proj.bias': (width, ),
        'visual.norm.weight': (width, ),
        'visual.norm.bias': (width, ),
        'visual.head.weight': (embed_dim, width),
        'visual.head.bias': (embed_dim, ),
        # eva_model.py:190-198, 209.
        'text.token_embedding.weight': (vocab_size, text_width),
        'text.positional_embedding': (context_length, text_width),
        'text.ln_final.weight': (text_width, ),
        'text.ln_final.bias': (text_width, ),
        'text.text_projection': (text_width, embed_dim),
        'text.logit_scale': (),
    }
    for i in range(depth):  # vit_model.py:46-183
        block = f'visual.blocks.{i}.'
        shapes.update({
            block + 'norm1.weight': (width, ),
            block + 'norm1.bias': (width, ),
            block + 'attn.q_bias': (width, ),
            block + 'attn.v_bias': (width, ),
            block + 'attn.qkv.weight': (3 * width, width),
            block + 'attn.proj.weight': (width, width),
            block + 'attn.proj.bias': (width, ),
            block + 'norm2.weight': (width, ),
            block + 'norm2.bias': (width, ),
            block + 'mlp.fc1.weight': (mlp_hidden, width),
            block + 'mlp.fc1.bias': (mlp_hidden, ),
            block + 'mlp.fc2.weight': (width, mlp_hidden),
            block + 'mlp.fc2.bias': (width, ),
        })
    for i in range(text_layers):  # eva_model.py:111-160 (mlp_ratio 4)
        block = f'text.transformer.resblocks.{i}.'
        shapes.update({
            block + 'ln_1.weight': (text_width, ),
            block + 'ln_1.bias': (text_width, ),
            block + 'attn.in_proj_weight': (3 * text_width, text_width),
            block + 'attn.in_proj_bias': (3 * text_width, ),
            block + 'attn.out_proj.weight': (text_width, text_width),
            block + 'attn.out_proj.bias': (text_width, ),
            block + 'ln_2.weight': (text_width, ),
            block + 'ln_2.bias': (text_width, ),
            block + 'mlp.c_fc.weight': (4 * text_width, text_width),
            block + 'mlp.c_fc.bias': (4 * text_width, ),
            block + 'mlp.c_proj.weight': (text_width, 4 * text_width),
            block + 'mlp.c_proj.bias': (text_width, ),
        })
    generator = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in shapes.items():
        if device == 'meta':
            state[key] = torch.empty(shape, device='meta')
        else:
            state[key] = torch.randn(shape, generator=generator) * scale
    if device != 'meta':
        state['text.logit_scale'] = torch.tensor(math.log(1 / 0.07))
    return state


def _tiny_official(path: Path, fp16: bool = True,
                   scale: float = 0.1) -> dict:
    state = official_eva_clip(
        width=EVA_ARCH['embed_dims'], depth=EVA_ARCH['num_layers'],
        mlp_hidden=EVA_ARCH['mlp_hidden_dim'], patch=EVA_ARCH['patch_size'],
        img_size=IMG_SIZE, embed_dim=EMBED_DIM, text_width=TEXT['width'],
        text_layers=TEXT['layers'], scale=scale)
    if fp16:
        # The release is DeepSpeed fp16 (EVA-01/eva/README.md), wrapped
        # under 'module'.
        state = {k: v.half() for k, v in state.items()}
    torch.save(dict(module=state), path)
    return {k: v.float() for k, v in state.items()}


def _convert(src: Path, dst: Path, *extra: str) -> None:
    convert_eva.main(['--src-format', 'official-clip', str(src), str(dst),
                      *extra])


def _layer_norm(x, weight, bias):
    return F.layer_norm(x, x.shape[-1:], weight, bias, eps=1e-5)


def text_by_hand(state: dict, tokens: torch.Tensor) -> torch.Tensor:
    """The official TextTransformer forward (eva_model.py:177-241), in
    plain tensor operations: causal attention, nn.GELU, eot pooling."""
    x = state['text.token_embedding.weight'][tokens]
    x = x + state['text.positional_embedding']
    length, width = x.shape[1], x.shape[2]
    heads = TEXT['heads']
    causal = torch.full((length, length), float('-inf')).triu(1)
    for i in range(TEXT['layers']):
        p = f'text.transformer.resblocks.{i}.'
        h = _layer_norm(x, state[p + 'ln_1.weight'], state[p + 'ln_1.bias'])
        q, k, v = (h @ state[p + 'attn.in_proj_weight'].t() +
                   state[p + 'attn.in_proj_bias']).chunk(3, dim=-1)
        q, k, v = (t.unflatten(-1, (heads, width // heads)).transpose(1, 2)
                   for t in (q, k, v))
        attn = (q @ k.transpose(-1, -2) / math.sqrt(width // heads) +
                causal).softmax(-1)
        out = (attn @ v).transpose(1, 2).flatten(2)
        x = x + out @ state[p + 'attn.out_proj.weight'].t() + state[
            p + 'attn.out_proj.bias']
        h = _layer_norm(x, state[p + 'ln_2.weight'], state[p + 'ln_2.bias'])
        h = F.gelu(h @ state[p + 'mlp.c_fc.weight'].t() +
                   state[p + 'mlp.c_fc.bias'])
        x = x + h @ state[p + 'mlp.c_proj.weight'].t() + state[
            p + 'mlp.c_proj.bias']
    x = _layer_norm(x, state['text.ln_final.weight'],
                    state['text.ln_final.bias'])
    pooled = x[torch.arange(len(tokens)), tokens.argmax(dim=-1)]
    return pooled @ state['text.text_projection']


def image_by_eva_vit(vision_file: Path, state: dict,
                     images: torch.Tensor) -> torch.Tensor:
    """EVAViT (the vision-only output) cls token, then ``visual.head``."""
    eva = EVAViT(arch=dict(EVA_ARCH), img_size=IMG_SIZE,
                 out_type='cls_token').eval()
    load_backbone_checkpoint(eva, str(vision_file))
    with torch.no_grad():
        cls = eva(images)[0]
    return cls @ state['visual.head.weight'].t() + state['visual.head.bias']


def test_whole_model_loads_in_open_clip_and_computes_the_official_model(
        tmp_path, clip_config_file):
    source = _tiny_official(tmp_path / 'eva_clip_psz14.pt')
    dst = tmp_path / 'open_clip.pth'
    _convert(tmp_path / 'eva_clip_psz14.pt', dst, '--clip-model', CLIP_NAME)
    converted = load_state_dict_file(dst)
    # Every source tensor lands unchanged under its open_clip name.
    renamed = {
        ('logit_scale' if k == 'text.logit_scale' else
         k.replace('visual.', 'visual.trunk.', 1)): v
        for k, v in source.items()
    }
    assert set(converted) == set(renamed)
    for key, value in renamed.items():
        assert converted[key].dtype == torch.float32
        assert torch.equal(converted[key], value), key

    clip = open_clip.create_model(CLIP_NAME, pretrained=str(dst)).eval()
    vision = tmp_path / 'vision.pth'
    _convert(tmp_path / 'eva_clip_psz14.pt', vision, '--vision-only')
    images = torch.randn(2, 3, IMG_SIZE, IMG_SIZE)
    tokens = open_clip.get_tokenizer(CLIP_NAME)(['a cat', 'two dogs here'])
    with torch.no_grad():
        torch.testing.assert_close(
            clip.encode_image(images),
            image_by_eva_vit(vision, source, images), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(
            clip.encode_text(tokens), text_by_hand(source, tokens),
            rtol=1e-4, atol=1e-5)
    # log(1 / 0.07), rounded to fp16 in the file.
    assert clip.logit_scale.item() == source['text.logit_scale'].item()
    assert clip.logit_scale.item() == pytest.approx(math.log(1 / 0.07),
                                                    abs=1e-3)


def test_vision_only_is_an_eva_vit_checkpoint(tmp_path):
    source = _tiny_official(tmp_path / 'src.pt', fp16=False)
    dst = tmp_path / 'vision.pth'
    _convert(tmp_path / 'src.pt', dst, '--vision-only')
    weights = load_state_dict_file(dst)
    eva = EVAViT(arch=dict(EVA_ARCH), img_size=IMG_SIZE)
    assert set(weights) == set(eva.state_dict())
    eva.load_state_dict(weights, strict=True)
    for key, value in weights.items():
        assert torch.equal(value, source[f'visual.{key}']), key

    # Resized for a patch-16 dense model, as the official format does.
    _convert(tmp_path / 'src.pt', tmp_path / 'p4.pth', '--vision-only',
             '--patch-size', '4', '--img-size', '48')
    resized = load_state_dict_file(tmp_path / 'p4.pth')
    assert resized['patch_embed.proj.weight'].shape[-2:] == (4, 4)
    assert resized['pos_embed'].shape[1] == (48 // 4)**2 + 1


def test_full_size_layout_matches_open_clip_and_eva_vit_giant(tmp_path):
    """EVA_CLIP_g_14.json sizes on the meta device: open_clip EVA01-g-14
    and the EVAViT giant take the converted names and shapes strictly."""
    from eva_mm.checkpoints.converters import SRC_FORMATS
    # EVA_CLIP_g_14.json: width 1408, 40 layers, mlp_ratio 4.3637
    # (int(1408 * 4.3637) = 6144), patch 14, 224 px, embed 1024; text
    # width 768, 12 layers.
    source = official_eva_clip(
        width=1408, depth=40, mlp_hidden=int(1408 * 4.3637), patch=14,
        img_size=224, embed_dim=1024, text_width=768, text_layers=12,
        device='meta')
    args = convert_eva.parse_args(
        ['--src-format', 'official-clip', 'a', 'b'])
    # Raises unless every key and shape fits EVA01-g-14.
    whole = SRC_FORMATS['official-clip'].convert(source, args)
    assert len(whole.state_dict) == len(source)
    args = convert_eva.parse_args(
        ['--src-format', 'official-clip', 'a', 'b', '--vision-only'])
    vision = SRC_FORMATS['official-clip'].convert(source, args)
    with torch.device('meta'):
        giant = EVAViT(arch='giant', img_size=224).state_dict()
    assert {k: v.shape for k, v in vision.state_dict.items()} == {
        k: v.shape for k, v in giant.items()}
    assert sorted(vision.dropped)[:2] == ['text.ln_final.bias',
                                          'text.ln_final.weight']
    assert 'visual.head.weight' in vision.dropped


def test_wrong_kinds_of_file_get_one_clear_error(tmp_path, capsys):
    official = official_eva_clip(
        width=8, depth=1, mlp_hidden=16, patch=8, img_size=16, embed_dim=4,
        text_width=8, text_layers=1, vocab_size=10, context_length=4)
    open_clip_layout = {
        k.replace('visual.', 'visual.trunk.', 1): v
        for k, v in official.items()
    }
    backbone = {
        k[len('visual.'):]: v
        for k, v in official.items() if k.startswith('visual.')
    }
    cases = {
        'open_clip.pt': (open_clip_layout, 'open_clip EVA CLIP checkpoint'),
        'eva_psz14.pt': (backbone, '--src-format official'),
        'text_only.pt': ({k: v for k, v in official.items()
                          if k.startswith('text.')}, 'not the BAAI EVA-CLIP'),
    }
    for name, (state, message) in cases.items():
        torch.save(state, tmp_path / name)
        with pytest.raises(SystemExit, match=message):
            _convert(tmp_path / name, tmp_path / f'{name}.out')
        assert not (tmp_path / f'{name}.out').exists()
    # A giant-sized file checked against the tiny test model: the
    # mismatch is named and nothing is written.
    torch.save(official, tmp_path / 'other_size.pt')
    with pytest.raises(SystemExit, match='does not fit open_clip'):
        _convert(tmp_path / 'other_size.pt', tmp_path / 'x.pth',
                 '--clip-model', 'EVA01-g-14')
    assert not (tmp_path / 'x.pth').exists()


def test_zero_shot_config_runs_on_the_converted_file(tmp_path,
                                                     clip_config_file):
    # Weights of std 1 and class names of different lengths (one '{}'
    # prompt): random towers whose answers differ between images.
    source = _tiny_official(tmp_path / 'eva_clip_psz14.pt', scale=1.0)
    dst = tmp_path / 'open_clip.pth'
    _convert(tmp_path / 'eva_clip_psz14.pt', dst, '--clip-model', CLIP_NAME)
    vision = tmp_path / 'vision.pth'
    _convert(tmp_path / 'eva_clip_psz14.pt', vision, '--vision-only')

    # Six classes: the config reports top-5 too.
    names = ['cat', 'small dog', 'big red ship', 'a tree in the park',
             'car', 'a bird over the blue sea']
    rng = np.random.default_rng(1)
    pictures = rng.integers(0, 256, (12, IMG_SIZE, IMG_SIZE, 3),
                            dtype=np.uint8)
    labels = np.arange(12) % len(names)
    for i, (picture, label) in enumerate(zip(pictures, labels)):
        folder = tmp_path / 'data' / f'class_{label}'
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(picture).save(folder / f'{i}.png')
    (tmp_path / 'classnames.txt').write_text('\n'.join(names) + '\n')

    # The expected top-1 from the official computation by hand: EVAViT
    # image features, the hand-written text tower, one prompt per class.
    mean, std = openai_mean_std()
    images = (torch.from_numpy(pictures).permute(0, 3, 1, 2).float() -
              torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(
                  3, 1, 1)
    tokens = open_clip.get_tokenizer(CLIP_NAME)(names)
    image_features = F.normalize(image_by_eva_vit(vision, source, images),
                                 dim=-1)
    text_features = F.normalize(text_by_hand(source, tokens), dim=-1)
    ranks = (-(image_features @ text_features.t())).argsort(dim=1).numpy()
    # Random towers, but not a degenerate one-class answer.
    assert len(set(ranks[:, 0])) > 1, ranks[:, 0]
    expected_top1 = 100 * np.mean(ranks[:, 0] == labels)
    expected_top5 = 100 * np.mean(
        [label in rank[:5] for label, rank in zip(labels, ranks)])

    cfg = Config.fromfile(
        str(ROOT / 'configs/clip/eva-clip-g14_zero-shot_imagefolder.py'))
    cfg.model.update(
        model_name=CLIP_NAME,
        model_config=str(clip_config_file),
        classnames=str(tmp_path / 'classnames.txt'),
        templates=['{}'])
    cfg.test_dataloader.update(batch_size=4, num_workers=0)
    cfg.test_dataloader.dataset.data_root = str(tmp_path / 'data')
    pipeline = cfg.test_dataloader.dataset.pipeline
    pipeline[1].scale, pipeline[2].crop_size = IMG_SIZE, IMG_SIZE
    cfg.work_dir = str(tmp_path / 'work')
    cfg.load_from = str(dst)  # what tools/test.py CONFIG CHECKPOINT does
    cfg.launcher = 'none'
    cfg.env_cfg.dist_cfg = dict(backend='gloo')
    metrics = build_runner(cfg).test()
    assert abs(metrics['accuracy/top1'] - expected_top1) < 1e-4
    assert abs(metrics['accuracy/top5'] - expected_top5) < 1e-4
