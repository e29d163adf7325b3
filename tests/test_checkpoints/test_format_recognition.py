"""Every registered format recognises its own layout and nothing of
eva_mm's, and the loaders choose a format as documented
(eva_mm.checkpoints.recognition): named, the zoo entry's, recognised for a
file with names the model lacks, or none (the file as it is).

The official layouts are those of every released file in the model zoo
(tests/test_zoo/released_layouts.py, written from the official code, meta
tensors), and timm's come from timm's own models.
"""
import sys
from pathlib import Path
from typing import Dict

import pytest
import timm
import torch

TESTS = Path(__file__).resolve().parents[1]
sys.path.append(str(TESTS / 'test_zoo'))

from eva_mm.checkpoints.converters import SRC_FORMATS  # noqa: E402
from eva_mm.checkpoints.errors import (CheckpointError,  # noqa: E402
                                       CheckpointFormatError,
                                       CheckpointMismatchError)
from eva_mm.checkpoints.recognition import (choose_format,  # noqa: E402
                                            convert_in_memory)
from eva_mm.checkpoints.registry import (format_arguments,  # noqa: E402
                                         recognised_formats)
from eva_mm.checkpoints.zoo import (MODEL_INDEX_ENV,  # noqa: E402
                                    load_model_index)
from eva_mm.models import EVAViT  # noqa: E402
from file_server import FileServer  # noqa: E402
from log_messages import log_messages  # noqa: E402
from released_layouts import official_layout  # noqa: E402
from test_eva02_converter import (eva_vit, expected_value,  # noqa: E402
                                  random_official)
from test_model_zoo import TINY_ENTRY, write_index  # noqa: E402

ZOO = load_model_index()
# One entry of each format, and the EVA-01 classifiers, whose layout
# (fc_norm, head) timm's eva_* models share.
FIRST_OF_FORMAT = {}
for _info in ZOO.values():
    FIRST_OF_FORMAT.setdefault(_info.src_format, _info)
EVA01_CLASSIFIERS = [
    name for name, info in ZOO.items()
    if info.src_format == 'official' and '--classifier' in info.converter_args
]


def released(name: str) -> Dict[str, torch.Tensor]:
    info = ZOO[name]
    return official_layout(info.src_format, info.file_name,
                           Path(info.config).stem)


def test_every_format_can_recognise() -> None:
    assert set(FIRST_OF_FORMAT) | {'timm', 'timm-eva02'} == set(SRC_FORMATS)
    assert all(callable(fmt.recognise) for fmt in SRC_FORMATS.values())


@pytest.mark.parametrize('name', sorted(ZOO))
def test_each_released_file_is_recognised(name: str) -> None:
    expected = ['official', 'timm'] if name in EVA01_CLASSIFIERS else [
        ZOO[name].src_format]
    assert recognised_formats(released(name)) == expected


def test_timm_layouts_from_timm() -> None:
    with torch.device('meta'):
        tiny = timm.create_model('eva02_tiny_patch14_224').state_dict()
        base = timm.create_model('eva02_base_patch14_224').state_dict()
        giant = timm.create_model('eva_giant_patch14_224').state_dict()
    # Ti/S: fused qkv and a packed SwiGLU fc1; B/L: q/k/v with biases.
    assert recognised_formats(tiny) == ['timm-eva02']
    assert recognised_formats(base) == ['timm-eva02']
    # timm's EVA-01 names are the official ones: a classifier is both; the
    # key bias that timm before 0.9 saved tells them apart.
    assert recognised_formats(giant) == ['official', 'timm']
    old_timm = dict(giant, **{'blocks.0.attn.k_bias': torch.zeros(1408)})
    assert recognised_formats(old_timm) == ['timm']
    mim = dict(giant, mask_token=torch.zeros(1, 1, 1408))
    assert recognised_formats(mim) == ['official']


@pytest.mark.parametrize('src_format', sorted(FIRST_OF_FORMAT))
def test_no_format_claims_eva_mm_layouts(src_format: str) -> None:
    """What each format writes, eva_mm's layout, is recognised by no
    format, except EVAViT's own EVA-01 names (the loaders load those as
    they are, since they fit)."""
    info = FIRST_OF_FORMAT[src_format]
    config = str(info.config_path) if info.load == 'model' else None
    # The vision tower: open_clip's whole g-14 is slow to build, even on
    # the meta device, to check the other output.
    args = format_arguments(info.converter_args, config=config,
                            vision_only=src_format == 'official-clip')
    converted = SRC_FORMATS[src_format].convert(released(info.name),
                                                args).state_dict
    recognised = recognised_formats(converted)
    if src_format in ('official', 'official-clip'):
        # EVA-01 names (with the MIM mask token: the official's only).
        assert 'official' in recognised
        assert set(recognised) <= {'official', 'timm'}
    else:
        assert recognised == []


def test_choice_order_and_errors() -> None:
    classifier = released(EVA01_CLASSIFIERS[0])
    option = '--checkpoint-format NAME'
    with pytest.raises(CheckpointFormatError) as error:
        choose_format(classifier, 'eva_21k.pt', option)
    message = str(error.value)
    assert 'official, timm' in message and option in message
    assert 'eva_21k.pt' in message
    # Named, or by the zoo entry: no question asked.
    assert choose_format(classifier, 'f', option, 'timm').reason == (
        f'named by {option}')
    entry = ZOO[EVA01_CLASSIFIERS[0]]
    choice = choose_format(classifier, 'f', option, model=entry)
    assert (choice.name, choice.options) == ('official', ('--classifier', ))
    # A file that fits the model is taken as it is, even if recognised.
    assert choose_format(classifier, 'f', option,
                         has_foreign_keys=lambda: False) is None
    assert choose_format({'weight': torch.zeros(1)}, 'f', option) is None
    with pytest.raises(CheckpointFormatError,
                       match="no checkpoint format 'offical'.*official-det"):
        choose_format(classifier, 'f', option, 'offical')
    with pytest.raises(CheckpointError, match=r"\['--no-such'\]"):
        format_arguments(['--no-such'])


def test_converted_in_memory_as_the_tool_converts(tmp_path: Path) -> None:
    official = released(
        'eva-g-p16_cascade-mask-rcnn_lsj-1280_lvis-v1_test-1536')
    choice = choose_format(official, 'eva_lvis.pth', 'opt')
    assert choice.name == 'official-det'
    with log_messages() as messages:
        conversion = convert_in_memory(official, choice, 'eva_lvis.pth',
                                       img_size=(1280, 1280))
    log = '\n'.join(messages)
    assert 'eva_lvis.pth: official-det layout (recognised from its keys)' \
        in log
    assert 'fed_loss_cls_weights' in log and 'dropped 3 key(s)' in log
    tool = SRC_FORMATS['official-det'].convert(
        official, format_arguments(['--img-size', '1280']))
    assert {k: v.shape for k, v in conversion.state_dict.items()} == {
        k: v.shape for k, v in tool.state_dict.items()}


# --- init_cfg=dict(type='Pretrained') of EVAViT -------------------------


def official_eva02_file(tmp_path: Path) -> Path:
    """A tiny official EVA-02 MIM file (the converter tests' layout)."""
    path = tmp_path / 'eva02_Ti_pt_in21k_p14.pt'
    torch.save({'module': random_official(subln=False)}, path)
    return path


def init(model: EVAViT, **init_cfg) -> EVAViT:
    model.init_cfg = dict(type='Pretrained', **init_cfg)
    model.init_weights()
    return model


def test_backbone_init_takes_an_official_file(tmp_path: Path) -> None:
    path = official_eva02_file(tmp_path)
    official = random_official(subln=False)
    with log_messages() as messages:
        model = init(eva_vit(subln=False), checkpoint=str(path))
    for key, value in model.state_dict().items():
        assert torch.equal(value, expected_value(official, key)), key
    log = '\n'.join(messages)
    assert 'official-eva02 layout (recognised from its keys)' in log
    assert 'lm_head.weight' in log and 'rope.freqs_cos' in log

    # At another size: as convert_eva.py --img-size gives it, then loads.
    resized = init(eva_vit(subln=False, img_size=112), checkpoint=str(path))
    args = format_arguments(['--img-size', '112'])
    expected = SRC_FORMATS['official-eva02'].convert(
        torch.load(path, weights_only=True), args).state_dict
    for key, value in resized.state_dict().items():
        assert torch.equal(value, expected[key]), key
    assert resized.pos_embed.shape[1] == 1 + 8 * 8


def test_backbone_init_by_url_and_zoo_name(
        tmp_path: Path, file_server: FileServer, checkpoint_cache: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    path = official_eva02_file(tmp_path)
    url = file_server.add('/Yuxin-CV/EVA-02/eva02_Ti.pt', path.read_bytes())
    reference = init(eva_vit(subln=False), checkpoint=str(path)).state_dict()

    by_url = init(eva_vit(subln=False), checkpoint=url).state_dict()
    assert all(torch.equal(by_url[k], v) for k, v in reference.items())
    assert (checkpoint_cache / 'eva02_Ti.pt').read_bytes() == \
        path.read_bytes()

    entry = TINY_ENTRY.format(name='tiny-eva02', file='eva02_Ti.pt', url=url)
    entry = entry.replace('Src Format: official', 'Src Format: official-eva02')
    monkeypatch.setenv(MODEL_INDEX_ENV, str(write_index(tmp_path, entry)))
    with log_messages() as messages:
        by_name = init(eva_vit(subln=False), checkpoint='tiny-eva02')
    assert all(torch.equal(by_name.state_dict()[k], v)
               for k, v in reference.items())
    assert 'the model-zoo entry tiny-eva02' in '\n'.join(messages)
    assert file_server.requests['/Yuxin-CV/EVA-02/eva02_Ti.pt'] == 1


def test_backbone_init_named_and_unknown_formats(tmp_path: Path) -> None:
    path = official_eva02_file(tmp_path)
    with log_messages() as messages:
        init(eva_vit(subln=False), checkpoint=str(path),
             checkpoint_format='official-eva02')
    assert 'official-eva02 layout (named by checkpoint_format=NAME in ' \
        'init_cfg' in '\n'.join(messages)
    with pytest.raises(CheckpointError, match='not an EVA-01 detectron2'):
        init(eva_vit(subln=False), checkpoint=str(path),
             checkpoint_format='official-det')

    foreign = tmp_path / 'foreign.pth'
    state = eva_vit(subln=False).state_dict()
    torch.save({f'encoder.layer{i}.{k}': v
                for i, (k, v) in enumerate(state.items())}, foreign)
    with pytest.raises(CheckpointMismatchError) as error:
        init(eva_vit(subln=False), checkpoint=str(foreign))
    message = str(error.value)
    assert 'no registered checkpoint format recognises its names' in message
    assert "checkpoint_format=NAME in init_cfg" in message

    # An eva_mm backbone file loads as it did (EVA-01 names, not converted).
    eva01 = EVAViT(arch=dict(embed_dims=32, num_layers=2, num_heads=2,
                             mlp_hidden_dim=64), img_size=32, patch_size=8)
    own = tmp_path / 'own.pth'
    torch.save({'state_dict': eva01.state_dict()}, own)
    with log_messages() as messages:
        loaded = init(EVAViT(arch=dict(embed_dims=32, num_layers=2,
                                       num_heads=2, mlp_hidden_dim=64),
                             img_size=32, patch_size=8), checkpoint=str(own))
    assert not any('layout' in message for message in messages)
    assert all(torch.equal(loaded.state_dict()[k], v)
               for k, v in eva01.state_dict().items())
