"""tools/train.py, tools/test.py and tools/dist_train.sh end to end on CPU.

A tiny EVAViT classifier (mmpretrain's ImageClassifier) trains on a generated
image folder. The tests run the real tools in subprocesses: a run killed with
SIGKILL resumes from its last checkpoint and then logs exactly the losses of an
uninterrupted run; tools/test.py evaluates a saved checkpoint; two gloo
processes train through dist_train.sh and evaluate through dist_test.sh.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from train_runs import read_losses, run_tool, train_cmd, write_classifier_run

# Runs tools or trains in subprocesses: left out of `pytest -m 'not slow'`.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope='module')
def config(tmp_path_factory) -> Path:
    return write_classifier_run(tmp_path_factory.mktemp('train_tools'))


def test_killed_run_resumes_with_identical_losses(config, tmp_path):
    reference_dir = tmp_path / 'reference'
    done = run_tool(train_cmd(config, reference_dir))
    assert done.returncode == 0, done.stderr[-3000:]
    reference = read_losses(reference_dir)
    assert sorted(reference) == list(range(1, 13))

    killed_dir = tmp_path / 'killed'
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        train_cmd(config, killed_dir),
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (killed_dir / 'iter_4.pth').exists():
        assert proc.poll() is None, 'training ended before it could be killed'
        assert time.time() < deadline, 'no checkpoint appeared'
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed_from = int(
        Path((killed_dir / 'last_checkpoint').read_text().strip()).stem
        .split('_')[1])
    assert 4 <= resumed_from < 12

    resumed = run_tool(train_cmd(config, killed_dir, '--resume'))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f'resumed epoch: 0, iter: {resumed_from}' in (
        resumed.stdout + resumed.stderr)
    losses = read_losses(killed_dir)
    for it in range(resumed_from + 1, 13):
        assert losses[it] == pytest.approx(reference[it], rel=1e-5, abs=1e-6)


def test_test_tool_evaluates_checkpoint_with_weights_only_load(
        config, tmp_path):
    work_dir = tmp_path / 'train'
    done = run_tool(
        train_cmd(config, work_dir, '--cfg-options',
                   'train_cfg.max_iters=2'))
    assert done.returncode == 0, done.stderr[-3000:]
    checkpoint = work_dir / 'iter_2.pth'
    # The checkpoint holds mmengine's message hub (HistoryBuffer, numpy
    # scalars), which weights_only loading refuses without eva_mm's
    # allow-list. A fresh interpreter, since this one may have imported
    # eva_mm already.
    plain = run_tool([
        sys.executable, '-c',
        f'import torch; torch.load({str(checkpoint)!r}, weights_only=True)'
    ])
    assert plain.returncode != 0
    assert 'HistoryBuffer' in plain.stderr
    result = run_tool([
        sys.executable,
        str(ROOT / 'tools/test.py'),
        str(config),
        str(checkpoint), '--work-dir',
        str(tmp_path / 'test')
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'accuracy/top1' in result.stdout + result.stderr


def test_load_from_and_missing_checkpoint(config, tmp_path):
    work_dir = tmp_path / 'train'
    assert run_tool(
        train_cmd(config, work_dir, '--cfg-options',
                   'train_cfg.max_iters=2')).returncode == 0
    finetune = run_tool(
        train_cmd(config, tmp_path / 'finetune', '--cfg-options',
                   'train_cfg.max_iters=1',
                   f'load_from={work_dir / "iter_2.pth"}'))
    assert finetune.returncode == 0, finetune.stderr[-3000:]
    assert 'Load checkpoint from' in finetune.stdout + finetune.stderr

    missing = run_tool([
        sys.executable,
        str(ROOT / 'tools/test.py'),
        str(config),
        str(tmp_path / 'nope.pth')
    ])
    assert missing.returncode != 0
    assert 'nope.pth does not exist' in missing.stderr


def test_dist_train_and_test_two_cpu_processes(config, tmp_path):
    work_dir = tmp_path / 'dist'
    result = run_tool([
        'bash',
        str(ROOT / 'tools/dist_train.sh'),
        str(config), '2', '--work-dir',
        str(work_dir), '--cfg-options', 'train_cfg.max_iters=2'
    ],
                  PYTHON=sys.executable,
                  PORT='29531')
    assert result.returncode == 0, result.stderr[-3000:]
    assert (work_dir / 'iter_2.pth').exists()
    # Both ranks joined one process group (mmengine calls its size 'GPU
    # number' whatever the device).
    log = result.stdout + result.stderr
    assert 'Distributed training: True' in log
    assert 'GPU number: 2' in log

    tested = run_tool([
        'bash',
        str(ROOT / 'tools/dist_test.sh'),
        str(config),
        str(work_dir / 'iter_2.pth'), '2', '--work-dir',
        str(tmp_path / 'dist_test')
    ],
                  PYTHON=sys.executable,
                  PORT='29532')
    assert tested.returncode == 0, tested.stderr[-3000:]
    assert 'accuracy/top1' in tested.stdout + tested.stderr
