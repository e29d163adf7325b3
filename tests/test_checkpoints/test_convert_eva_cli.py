"""``convert_eva.py``'s command line: ``--img-size`` as ``SIZE``, ``H W``
or ``HxW`` never swallows the positional SRC DST (the issue's
``--img-size 1024 SRC DST`` failed with "invalid _positive_int value")."""
import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from eva_mm.checkpoints.loading import load_backbone_checkpoint
from eva_mm.models import EVAViT

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / 'tools' / 'model_converters' / 'convert_eva.py'
ARCH = dict(embed_dims=32, num_layers=2, num_heads=2, mlp_hidden_dim=64)


@pytest.fixture(scope='module')
def convert_eva() -> ModuleType:
    spec = importlib.util.spec_from_file_location('convert_eva', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('argv, size', [
    (['--img-size', '1024', 'SRC', 'DST'], (1024, 1024)),
    (['--img-size', '1024', '768', 'SRC', 'DST'], (1024, 768)),
    (['--img-size', '1024x768', 'SRC', 'DST'], (1024, 768)),
    (['SRC', 'DST', '--img-size', '1024', '768'], (1024, 768)),
    (['SRC', '--img-size', '896', 'DST'], (896, 896)),
    (['--img-size=1280', 'SRC', 'DST'], (1280, 1280)),
])
def test_img_size_forms(convert_eva: ModuleType, argv: list,
                        size: tuple) -> None:
    args = convert_eva.parse_args(['--src-format', 'official-det'] + argv)
    assert (args.src, args.dst, args.img_size) == ('SRC', 'DST', size)


def test_bad_img_sizes_are_refused(convert_eva: ModuleType,
                                   capsys: pytest.CaptureFixture) -> None:
    for value in ('0', '16x0', '1024x768x3', 'big'):
        with pytest.raises(SystemExit):
            convert_eva.parse_args(
                ['--src-format', 'official', '--img-size', value, 'S', 'D'])
        error = capsys.readouterr().err
        assert 'argument --img-size' in error, error
        assert ('not a positive size' in error) == (value in ('0', '16x0'))
    # Three numbers: the third is no path, so the paths are one too many.
    with pytest.raises(SystemExit):
        convert_eva.parse_args(['--src-format', 'official', '--img-size',
                                '1', '2', '3', 'S', 'D'])


def test_no_option_takes_several_tokens(convert_eva: ModuleType) -> None:
    """Any option with nargs '+', '*' or a count would swallow SRC DST."""
    parser = convert_eva.build_parser()
    for action in parser._actions:
        if action.option_strings:
            assert action.nargs in (None, 0, '?'), action.option_strings
    assert isinstance(parser, argparse.ArgumentParser)


@pytest.mark.slow
def test_conversion_with_img_size_before_the_paths(tmp_path: Path) -> None:
    src, dst = tmp_path / 'eva.pth', tmp_path / 'eva_64x48.pth'
    torch.manual_seed(0)
    source = EVAViT(arch=ARCH, img_size=32, patch_size=8)
    torch.save({'model': source.state_dict()}, src)
    proc = subprocess.run(
        [sys.executable, str(TOOL), '--src-format', 'official',
         '--img-size', '64', '48', str(src), str(dst)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert 'pos_embed: [1, 17, 32] -> [1, 49, 32]' in proc.stdout
    converted = torch.load(dst, weights_only=True)['state_dict']
    # An 8 x 6 grid of patches plus the cls position.
    assert converted['pos_embed'].shape == (1, 1 + 8 * 6, 32)
    target = EVAViT(arch=ARCH, img_size=(64, 48), patch_size=8)
    load_backbone_checkpoint(target, dst)
    assert torch.equal(target.blocks[1].mlp.fc2.weight,
                       source.blocks[1].mlp.fc2.weight)
    torch.testing.assert_close(target.pos_embed, converted['pos_embed'])
