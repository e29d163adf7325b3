"""tools/analysis/rel_pos_attention_benchmark.py on a tiny case: every
formulation computes the official arithmetic, and the report has a row per
formulation and dtype."""
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / 'tools/analysis'))
import rel_pos_attention_benchmark as bench  # noqa: E402


def test_formulations_agree_with_the_official_arithmetic():
    hw = (5, 3)
    inputs = bench.make_inputs(hw, batch=2, heads=2, head_dim=8,
                               device=torch.device('cpu'))
    diffs = bench.max_difference(inputs, hw)
    assert set(diffs) == set(bench.IMPLS)
    assert max(diffs.values()) < 1e-5
    # The relative tables matter: plain attention is far from it.
    q, k, v = inputs[:3]
    plain = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    ref = bench.official(*inputs, hw, 8**-0.5)
    assert (plain - ref).abs().max() > 1e-2


def test_report_rows(tmp_path):
    out = tmp_path / 'report.md'
    bench.main(['--case', 'tiny:4x3:2', '--heads', '2', '--head-dim', '8',
                '--iters', '1', '--warmup', '0', '--impl', 'official',
                'blocked', '--dtype', 'fp32', '--out', str(out)])
    rows = [line for line in out.read_text().splitlines()
            if line.startswith('| tiny')]
    assert [row.split('|')[4].strip() for row in rows] == [
        'official', 'blocked']


def test_bad_case_is_refused():
    with pytest.raises(SystemExit):
        bench.main(['--case', 'global:64:1'])


def test_plain_formulations_agree_and_report(tmp_path):
    hw = (4, 3)
    inputs = bench.make_inputs(hw, batch=2, heads=2, head_dim=8,
                               device=torch.device('cpu'))
    diffs = bench.max_difference(inputs, hw, no_rel_pos=True)
    assert set(diffs) == set(bench.PLAIN_IMPLS)
    assert max(diffs.values()) < 1e-5
    out = tmp_path / 'report.md'
    bench.main(['--plain', '--case', 'tiny:4x3:2', '--heads', '2',
                '--head-dim', '8', '--iters', '1', '--warmup', '0',
                '--dtype', 'bf16', '--out', str(out)])
    rows = [line for line in out.read_text().splitlines()
            if line.startswith('| tiny')]
    assert [row.split('|')[4].strip() for row in rows] == list(
        bench.PLAIN_IMPLS)


def test_formulations_of_the_other_mode_are_refused():
    with pytest.raises(SystemExit):
        bench.main(['--plain', '--impl', 'blocked'])
