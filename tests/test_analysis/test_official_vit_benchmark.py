"""The parts of tools/analysis/official_vit_benchmark.py that are eva_mm's.

The official EVA code is not part of the project (the benchmark imports it
from a checkout the user points to), so the end-to-end comparison runs only
by hand (docs/benchmark.md). Tested here without it: the command line and
the options handed to EVAViT, the stand-ins the official files are imported
with, the weight mapping from state dicts in the official layouts (written
from the official model code by tests/test_det and tests/test_seg), and the
report table.
"""
import sys
from pathlib import Path
from typing import Union

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.ops.multi_scale_deform_attn import \
    multi_scale_deformable_attn_pytorch

from test_det.test_official_det_converter import official_shapes
from test_seg.official_seg_layout import beit_adapter_shapes

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / 'tools/analysis'))
import official_eva  # noqa: E402
import official_vit_benchmark as bench  # noqa: E402

TINY = dict(embed_dims=32, num_layers=4, num_heads=2, mlp_hidden_dim=64)


def test_cases_parse_and_no_option_reaches_evavit_unless_given():
    args = bench.parse_args(['--official-repo', 'EVA', '--case', 'det-b:512',
                             'det-l:1024', 'adapter-b:896'])
    assert args.case == [('det-b', 512), ('det-l', 1024), ('adapter-b', 896)]
    assert args.threads == 1 and args.dtype == ['fp32']
    assert bench.eva_mm_options(args) == {}
    for mode, value in (('none', False), ('all', True)):
        args = bench.parse_args(['--official-repo', 'EVA', '--with-cp', mode])
        assert bench.eva_mm_options(args) == {'with_cp': value}
    assert [bench.eva_mm_with_cp(m) for m in bench.CP_MODES] == [
        False, True, 'global', 'attn'
    ]
    assert [bench.official_with_cp(m) for m in bench.CP_MODES] == [
        False, True, True, True
    ]


@pytest.mark.parametrize('argv,message', [
    (['--case', 'det-b:512'], '--official-repo DIR is required'),
    (['--official-repo', 'EVA', '--case', 'det-b:200'], 'multiple of 16'),
    # Smaller than one window of 14 patches.
    (['--official-repo', 'EVA', '--case', 'det-b:208'], 'at least 224'),
    (['--official-repo', 'EVA', '--case', 'adapter-b:880'], 'multiple of 32'),
    (['--official-repo', 'EVA', '--case', 'vit-b:512'], 'not PAIR:IMG'),
    (['--official-repo', 'EVA', '--warmup', '0'], 'at least 1'),
])
def test_bad_arguments_name_the_problem(argv, message, capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(argv)
    assert message in capsys.readouterr().err


class _BoolCheckpointing:
    """A backbone whose ``with_cp`` is a bool, as EVAViT's before the
    checkpointing modes."""

    def __init__(self, with_cp: bool = False) -> None:
        pass


class _ModeCheckpointing:
    """A backbone with checkpointing modes and a compile switch."""

    def __init__(self, with_cp: Union[bool, str] = False,
                 compile: bool = False) -> None:
        pass


def test_options_the_backbone_lacks_are_refused(monkeypatch):
    args = bench.parse_args(['--official-repo', 'EVA', '--with-cp', 'global',
                             '--compile'])
    monkeypatch.setattr(bench, 'EVAViT', _BoolCheckpointing)
    # A mode on a bool with_cp would checkpoint every block unnoticed.
    with pytest.raises(SystemExit, match='with_cp as a bool only'):
        bench.eva_mm_options(args)
    args.with_cp = 'all'
    with pytest.raises(SystemExit, match='no compile option'):
        bench.eva_mm_options(args)
    monkeypatch.setattr(bench, 'EVAViT', _ModeCheckpointing)
    args.with_cp = 'attn'
    assert bench.eva_mm_options(args) == {'with_cp': 'attn', 'compile': True}


def test_stand_ins_are_gone_afterwards_and_real_modules_come_back():
    import mmseg.utils
    real = sys.modules['mmseg.utils']
    with official_eva._stand_ins({
            'detectron2.layers': {'CNNBlockBase': 1},
            'mmseg.utils': {'get_root_logger': 2}}):
        import detectron2.layers as layers
        from mmseg.utils import get_root_logger
        assert (layers.CNNBlockBase, get_root_logger) == (1, 2)
    assert not [n for n in sys.modules if n.split('.')[0] == 'detectron2']
    assert sys.modules['mmseg.utils'] is real
    assert sys.modules['mmseg'].utils is mmseg.utils


def test_unused_stand_in_can_be_subclassed_but_not_called():
    stand_in = official_eva._unused('detectron2.layers.CNNBlockBase')

    class Block(stand_in):
        pass

    with pytest.raises(RuntimeError, match='detectron2.layers.CNNBlockBase'):
        Block()


def test_checkpoint_wrapper_keeps_names_and_gradients():
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 4))
    wrapped = official_eva._checkpoint_wrapper(
        nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 4)))
    wrapped.load_state_dict(plain.state_dict())
    x = torch.randn(3, 4, requires_grad=True)
    grads, calls = [], []

    def count(*_) -> None:
        calls[-1] += 1

    for model in (plain, wrapped):
        calls.append(0)
        model[0].register_forward_hook(count)
        model(x).pow(2).sum().backward()
        grads.append([x.grad.clone()] +
                     [p.grad for p in model.parameters()])
        x.grad = None
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # The wrapped forward runs again in backward.
    assert calls == [1, 2]


def test_deform_attn_stand_in_runs_fp32_under_autocast():
    torch.manual_seed(0)
    shapes = torch.tensor([[4, 4], [2, 2]])
    value = torch.randn(1, 20, 2, 8)
    locations = torch.rand(1, 5, 2, 2, 3, 2)
    weights = torch.rand(1, 5, 2, 2, 3).softmax(-1)
    function = official_eva._PyTorchDeformAttn(
        multi_scale_deformable_attn_pytorch)
    reference = multi_scale_deformable_attn_pytorch(value, shapes,
                                                    locations, weights)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = function.apply(value.bfloat16(), shapes, None,
                             locations.bfloat16(), weights.bfloat16(), 64)
    # As custom_fwd(cast_inputs=torch.float32): fp32 math on the inputs.
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, multi_scale_deformable_attn_pytorch(
        value.bfloat16().float(), shapes, locations.bfloat16().float(),
        weights.bfloat16().float()), rtol=0, atol=0)
    torch.testing.assert_close(
        function.apply(value, shapes, None, locations, weights, 64),
        reference, rtol=0, atol=0)


def test_missing_checkout_is_named():
    with pytest.raises(FileNotFoundError, match='baaivision/EVA'):
        official_eva.load_official_det('/nonexistent')


def test_official_det_weights_load_into_evavit_unchanged_but_pos_embed():
    window, global_blocks, img = 4, (1, 3), 96  # 6 x 6 patches: padding
    pair = official_eva.DetPair('tiny', '', TINY, window, global_blocks)
    generator = torch.Generator().manual_seed(0)
    official = {
        key[len('backbone.net.'):]: torch.randn(shape, generator=generator)
        for key, shape in official_shapes(32, 4, 2, 64, window,
                                          global_blocks, img, 1).items()
        if key.startswith('backbone.net.')
    }
    model = pair.build_eva_mm(img, {})
    model.load_state_dict(pair.eva_mm_weights(official, img))  # strict
    state = model.state_dict()
    assert set(state) == set(official)
    for key, value in official.items():
        if key != 'pos_embed':
            assert torch.equal(state[key], value), key
    # What get_abs_pos computes at every official forward
    # (EVA-01/det/detectron2/modeling/backbone/utils.py:166-189): the cls
    # position dropped, the 14 x 14 grid resized bicubically.
    grid = official['pos_embed'][:, 1:].reshape(1, 14, 14, 32)
    expected = F.interpolate(grid.permute(0, 3, 1, 2), size=(6, 6),
                             mode='bicubic', align_corners=False)
    torch.testing.assert_close(state['pos_embed'],
                               expected.permute(0, 2, 3, 1).reshape(1, 36, 32))


def test_official_adapter_weights_load_into_evavit_adapter_unchanged():
    pair = official_eva.AdapterPair('tiny', '', TINY,
                                    ((0, 0), (1, 1), (2, 2), (3, 3)), 2)
    img = 64
    generator = torch.Generator().manual_seed(0)
    official = {
        key[len('backbone.'):]:
        torch.randint(0, 9, shape, generator=generator)
        if key.endswith('num_batches_tracked') else
        torch.randn(shape, generator=generator)
        for key, shape in beit_adapter_shapes(32, 4, 2, 64, 16, img, 64,
                                              2).items()
    }
    model = pair.build_eva_mm(img, {})
    model.load_state_dict(pair.eva_mm_weights(official, img))  # strict
    state = model.state_dict()
    assert set(state) == set(official)
    for key, value in official.items():
        assert torch.equal(state[key], value), key


def _row(**changes) -> dict:
    row = dict(
        pair='det-b', img=1024, dtype='bf16', cp='global', compile=True,
        parity=2e-6, first_step={'official': 90.5, 'eva_mm': 120.25},
        seconds={'official': 84.2, 'eva_mm': 81.7}, speed_ratio=1.031,
        peak={'official': {'tensor': 8520 * 2.**20, 'rss': 9000 * 2.**20},
              'eva_mm': {'tensor': 4260 * 2.**20, 'rss': None}})
    row.update(changes)
    return row


def test_report_rows_give_both_ratios():
    assert bench.format_row(_row()) == (
        '| det-b | 1024 | bf16 | global (official: all) | yes | 84.20 '
        '| 81.70 | 1.03 | 8520 | 4260 | 0.50 | 9000 / n/a '
        '| 90.50 / 120.25 |')
    none = bench.format_row(_row(cp='none', compile=False))
    assert '| none | no |' in none
    assert bench.format_row(_row(cp='all')).split(' | ')[3] == 'all'
    # No official peak (e.g. not measured): no ratio.
    peak = {'official': {'tensor': None, 'rss': None},
            'eva_mm': {'tensor': 1.0, 'rss': None}}
    assert '| n/a | 0 | n/a |' in bench.format_row(_row(peak=peak))
    header = bench.TABLE_HEADER[0]
    assert bench.format_row(_row()).count('|') == header.count('|')


def test_report_names_the_command_and_the_output_difference(monkeypatch):
    argv = ['--official-repo', 'EVA', '--case', 'det-b:1024', '--dtype',
            'bf16']
    monkeypatch.setattr(sys, 'argv', ['official_vit_benchmark.py', *argv])
    text = bench.report(bench.parse_args(argv), [_row()])
    lines = text.splitlines()
    assert lines[0] == ('Command: `python tools/analysis/official_vit_'
                        'benchmark.py --official-repo EVA --case det-b:1024 '
                        '--dtype bf16`')
    assert ('max abs difference of the feature maps at fp32: det-b 1024 px '
            '2.0e-06.') in text
    assert lines[-3:] == [*bench.TABLE_HEADER, bench.format_row(_row())]
