"""EVA MIM through the real tools on CPU, with the demo configs.

Runs of tools/train.py (plain Runner) and of tools/dist_train.sh with
DeepSpeed ZeRO-1 bf16 (one gloo process) are killed with SIGKILL after a
checkpoint and resume with the losses of uninterrupted runs; DeepSpeed also
trains with two processes; both kinds of checkpoint export to backbone
checkpoints that EVAViT loads.
"""
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from train_runs import read_losses, train_cmd

import eva_mm  # noqa: F401  (allow-lists mmengine's pickles)
from eva_mm.datasets.synthetic import generate_demo_shapes
from eva_mm.models import EVAViT
from eva_mm.checkpoints.loading import load_backbone_checkpoint
from eva_mm.checkpoints.reading import load_state_dict_file

# Runs tools or trains in subprocesses: left out of `pytest -m 'not slow'`.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PLAIN = ROOT / 'configs/mim/eva-mim_demo-tiny-p8_clip-tiny_shapes.py'
DEEPSPEED = PLAIN.with_name(PLAIN.stem + '_deepspeed-bf16.py')
_spec = importlib.util.spec_from_file_location(
    'export_mim', ROOT / 'tools/model_converters/export_mim.py')
export_mim = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(export_mim)


@pytest.fixture(scope='module')
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('mim_data')
    generate_demo_shapes(str(root), num_train=32, num_val=1, img_size=64)
    return root / 'train'


def _options(data_root: Path, iters: int) -> list:
    return [
        '--cfg-options', f'train_dataloader.dataset.data_root={data_root}',
        f'train_cfg.max_iters={iters}', 'default_hooks.logger.interval=1',
        'default_hooks.checkpoint.interval=4'
    ]


def _env(**extra) -> dict:
    return dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(ROOT),
                **extra)


def _run(args: list, **env) -> subprocess.CompletedProcess:
    done = subprocess.run(
        args, cwd=ROOT, env=_env(**env), capture_output=True, text=True,
        timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _dist_train(config: Path, procs: int, work_dir: Path,
                *extra: str) -> list:
    return ['bash', str(ROOT / 'tools/dist_train.sh'), str(config),
            str(procs), '--work-dir', str(work_dir), *extra]


def _kill_after_first_checkpoint(proc: subprocess.Popen,
                                 work_dir: Path) -> None:
    """SIGKILL the run's process group once a checkpoint is complete."""
    deadline = time.time() + 240
    while not (work_dir / 'last_checkpoint').exists():
        assert proc.poll() is None, 'training ended before it was killed'
        assert time.time() < deadline, 'no checkpoint appeared'
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 'iter_4.pth' in (work_dir / 'last_checkpoint').read_text()
    assert not (work_dir / 'iter_8.pth').exists()


def _check_export(src: Path, dst: Path, trained: dict) -> None:
    export_mim.export(str(src), str(dst))
    backbone = EVAViT(
        arch=dict(embed_dims=64, num_layers=4, num_heads=2,
                  mlp_hidden_dim=256),
        img_size=64, patch_size=8)
    load_backbone_checkpoint(backbone, str(dst))
    exported = backbone.state_dict()
    assert 'cls_token' in exported and 'pos_embed' in exported
    for key, value in exported.items():
        torch.testing.assert_close(value, trained['backbone.' + key].float())


def test_plain_runner_killed_resumes_exactly_and_exports(data_root, tmp_path):
    reference_dir = tmp_path / 'reference'
    _run(train_cmd(PLAIN, reference_dir, *_options(data_root, 8)))
    reference = read_losses(reference_dir)
    assert sorted(reference) == list(range(1, 9))

    killed_dir = tmp_path / 'killed'
    proc = subprocess.Popen(
        train_cmd(PLAIN, killed_dir, *_options(data_root, 8)), cwd=ROOT,
        env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    _kill_after_first_checkpoint(proc, killed_dir)
    resumed = _run(train_cmd(PLAIN, killed_dir, '--resume',
                          *_options(data_root, 8)))
    assert 'resumed epoch: 0, iter: 4' in resumed.stdout + resumed.stderr
    losses = read_losses(killed_dir)
    for it in range(5, 9):
        assert losses[it] == pytest.approx(reference[it], rel=1e-5)

    checkpoint = torch.load(killed_dir / 'iter_8.pth', weights_only=True)
    trained = checkpoint['state_dict']
    # The teacher is in neither the weights nor the optimizer state.
    assert not [k for k in trained if not k.startswith(('backbone.',
                                                        'head.'))]
    student = [k for k in trained if k != 'data_preprocessor.mean']
    assert len(checkpoint['optimizer']['state']) == len(student)
    _check_export(killed_dir / 'iter_8.pth', tmp_path / 'plain.pth', trained)


def test_deepspeed_bf16_one_and_two_processes(data_root, tmp_path):
    one = tmp_path / 'one'
    _run(_dist_train(DEEPSPEED, 1, one, *_options(data_root, 8)),
         PYTHON=sys.executable, PORT='29561')
    reference = read_losses(one)
    assert sorted(reference) == list(range(1, 9))
    model_file = one / 'iter_8.pth' / 'mp_rank_00_model_states.pt'
    trained = load_state_dict_file(model_file)
    assert trained['backbone.cls_token'].dtype == torch.bfloat16
    assert all(k.startswith(('backbone.', 'head.')) for k in trained)
    _check_export(one / 'iter_8.pth', tmp_path / 'ds.pth', trained)

    # Killed (the launcher and its worker, SIGKILL) after the iteration-4
    # checkpoint, then resumed.
    killed_dir = tmp_path / 'killed'
    proc = subprocess.Popen(
        _dist_train(DEEPSPEED, 1, killed_dir, *_options(data_root, 8)),
        cwd=ROOT, env=_env(PYTHON=sys.executable, PORT='29562'),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    _kill_after_first_checkpoint(proc, killed_dir)
    _run(_dist_train(DEEPSPEED, 1, killed_dir, '--resume',
                     *_options(data_root, 8)),
         PYTHON=sys.executable, PORT='29564')
    losses = read_losses(killed_dir)
    for it in range(5, 9):
        assert losses[it] == pytest.approx(reference[it], rel=1e-5)

    two = tmp_path / 'two'
    done = _run(_dist_train(DEEPSPEED, 2, two, *_options(data_root, 4)),
                PYTHON=sys.executable, PORT='29563')
    log = done.stdout + done.stderr
    assert 'Distributed training: True' in log and 'GPU number: 2' in log
    # ZeRO-1 partitions the optimizer state over the two ranks.
    assert sorted(p.name for p in (two / 'iter_4.pth').iterdir()) == [
        'bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt',
        'bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt',
        'mp_rank_00_model_states.pt'
    ]
    assert sorted(read_losses(two)) == [1, 2, 3, 4]
