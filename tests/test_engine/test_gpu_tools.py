"""The GPU tools on the CPU: gpu_check.py's dry run and the Slurm scripts.

``tools/gpu_check.py --dry-run`` runs every section of the GPU check (the
same code as on a GPU, tiny sizes) and must report each as passed. The Slurm
scripts are run with a stand-in ``srun`` on PATH that records its arguments,
so the command line they hand to Slurm is checked word for word.
"""
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

# Runs tools or trains in subprocesses: left out of `pytest -m 'not slow'`.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_dry_run_passes_every_section(tmp_path):
    out = tmp_path / 'gpu_check'
    run = subprocess.run(
        [sys.executable, str(ROOT / 'tools/gpu_check.py'), '--dry-run',
         '--out-dir', str(out)],
        capture_output=True, text=True, timeout=900,
        env=dict(os.environ, PORT='29571'))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads((out / 'gpu_check.json').read_text())
    sections = results['sections']
    assert list(sections) == ['vit', 'mim', 'det', 'seg', 'video', 'dist',
                              'official']
    assert {s['status'] for s in sections.values()} == {'ok'}
    assert results['machine']['dry_run'] is True
    vit = sections['vit']
    for mode in ('forward', 'forward_backward'):
        rows = vit[mode]
        assert rows['speed_ratio_eva_mm_over_timm'] == pytest.approx(
            rows['timm']['seconds'] / rows['eva_mm']['seconds'])
        # No GPU memory on the CPU: reported as unknown, not as zero.
        assert rows['memory_ratio_eva_mm_over_timm'] is None
    assert sections['mim']['images_per_s'] > 0
    assert sections['det']['train_iters_per_s'] > 0
    assert sections['seg']['deform_attn_cuda_vs_pytorch_max_abs_diff'] is None
    assert sections['dist'] == dict(sections['dist'], backend='gloo',
                                    distributed=True, checkpoint='iter_2.pth')
    # Without --official-repo (the official code is not in the project) the
    # ViT-g comparison runs EVAViT alone, at the tiny stand-in of both sizes.
    official = sections['official']
    assert (official['pair'], official['window']) == ('det-g-tiny', 4)
    for img in (64, 96):
        size = official[f'img_{img}']
        assert size['official'] == {
            'status': 'not run: pass --official-repo DIR'}
        assert size['eva_mm']['seconds'] > 0
        assert size['eva_mm']['peak_gib'] is None
        assert 'speed_ratio_official_over_eva_mm' not in size
    report = (out / 'gpu_check.md').read_text()
    for name in sections:
        assert f'## {name}' in report


@pytest.fixture
def fake_srun(tmp_path):
    """A ``srun`` that writes its arguments, one per line, to a file."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    record = tmp_path / 'srun_args.txt'
    srun = bin_dir / 'srun'
    srun.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\n')
    srun.chmod(srun.stat().st_mode | stat.S_IEXEC)
    env = dict(os.environ, PATH=f'{bin_dir}:{os.environ["PATH"]}',
               PYTHON='python3')
    for name in ('GPUS', 'GPUS_PER_NODE', 'CPUS_PER_TASK', 'SRUN_ARGS'):
        env.pop(name, None)
    return env, record


def _slurm(script: str, args, env, **extra):
    return subprocess.run(['bash', str(ROOT / 'tools' / script), *args],
                          env=dict(env, **extra), capture_output=True,
                          text=True, timeout=60)


def test_slurm_train_hands_srun_the_train_command(fake_srun):
    env, record = fake_srun
    run = _slurm('slurm_train.sh', [
        'gpu', 'eva-det', 'configs/x.py', 'work_dirs/x', '--resume',
        '--cfg-options', 'train_cfg.max_iters=10'
    ], env, GPUS='16', SRUN_ARGS='-w node1 --exclusive')
    assert run.returncode == 0, run.stderr
    assert record.read_text().splitlines() == [
        '-p', 'gpu', '--job-name=eva-det', '--gres=gpu:8', '--ntasks=16',
        '--ntasks-per-node=8', '--cpus-per-task=5', '--kill-on-bad-exit=1',
        '-w', 'node1', '--exclusive', 'python3', '-u',
        str(ROOT / 'tools/train.py'), 'configs/x.py', '--work-dir',
        'work_dirs/x', '--resume', '--cfg-options', 'train_cfg.max_iters=10',
        '--launcher', 'slurm'
    ]


def test_slurm_test_defaults_to_one_node_of_the_gpus_asked(fake_srun):
    env, record = fake_srun
    run = _slurm('slurm_test.sh', ['p', 'j', 'c.py', 'ckpt.pth', '--tta'],
                 env, GPUS='4')
    assert run.returncode == 0, run.stderr
    args = record.read_text().splitlines()
    assert args[:8] == [
        '-p', 'p', '--job-name=j', '--gres=gpu:4', '--ntasks=4',
        '--ntasks-per-node=4', '--cpus-per-task=5', '--kill-on-bad-exit=1'
    ]
    assert args[8:] == ['python3', '-u', str(ROOT / 'tools/test.py'),
                        'c.py', 'ckpt.pth', '--tta', '--launcher', 'slurm']


@pytest.mark.parametrize('script,args,extra,message', [
    ('slurm_train.sh', ['p', 'j', 'c.py'], {}, 'usage: bash tools/slurm_train'),
    ('slurm_test.sh', ['p', 'j', 'c.py'], {}, 'usage: bash tools/slurm_test'),
    ('slurm_train.sh', ['p', 'j', 'c.py', 'w'],
     dict(GPUS='12', GPUS_PER_NODE='8'), 'not a multiple of GPUS_PER_NODE'),
    ('slurm_train.sh', ['p', 'j', 'c.py', 'w'], dict(GPUS='two'),
     'GPUS must be a positive integer'),
])
def test_slurm_bad_arguments_fail_before_srun(fake_srun, script, args, extra,
                                              message):
    env, record = fake_srun
    run = _slurm(script, args, env, **extra)
    assert run.returncode == 2
    assert message in run.stderr
    assert not record.exists()


def _recording_python(path: Path, record: Path) -> None:
    """An executable at ``path`` that writes its arguments to ``record``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\n')
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.mark.parametrize('with_venv', [True, False])
def test_launchers_default_to_the_checkout_venv(tmp_path, fake_srun,
                                                with_venv):
    """Without PYTHON, dist_*.sh and slurm_*.sh run the checkout's
    .venv/bin/python if it exists, else python from PATH."""
    env, srun_record = fake_srun
    env = dict(env)
    del env['PYTHON']
    checkout = tmp_path / 'checkout'
    (checkout / 'tools').mkdir(parents=True)
    for name in ('dist_launch.sh', 'dist_train.sh', 'dist_test.sh',
                 'slurm_launch.sh', 'slurm_train.sh', 'slurm_test.sh',
                 'default_python.sh'):
        (checkout / 'tools' / name).write_text(
            (ROOT / 'tools' / name).read_text())
    record = tmp_path / 'python_args.txt'
    venv_python = checkout / '.venv' / 'bin' / 'python'
    path_python = tmp_path / 'bin' / 'python'  # the fake srun's bin dir
    _recording_python(venv_python if with_venv else path_python, record)
    expected = str(venv_python) if with_venv else 'python'

    def launch(script: str, *args: str, **extra: str) -> None:
        run = subprocess.run(['bash', str(checkout / 'tools' / script), *args],
                             env=dict(env, **extra), capture_output=True,
                             text=True, timeout=60)
        assert run.returncode == 0, run.stderr

    launch('slurm_test.sh', 'p', 'j', 'c.py', 'ckpt.pth', GPUS='1')
    assert srun_record.read_text().splitlines()[8] == expected
    launch('slurm_train.sh', 'p', 'j', 'c.py', 'w', GPUS='1')
    assert srun_record.read_text().splitlines()[8] == expected
    for script, args, tool in (
            ('dist_train.sh', ['c.py', '2'], 'train.py'),
            ('dist_test.sh', ['c.py', 'ckpt.pth', '2'], 'test.py')):
        launch(script, *args)
        recorded = record.read_text().splitlines()
        assert recorded[:2] == ['-m', 'torch.distributed.run']
        assert str(checkout / 'tools' / tool) in recorded
    # PYTHON set wins.
    launch('slurm_test.sh', 'p', 'j', 'c.py', 'ckpt.pth', GPUS='1',
           PYTHON='python3.11')
    assert srun_record.read_text().splitlines()[8] == 'python3.11'
