"""Helpers for tests that run tools/train.py in subprocesses."""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def train_cmd(config: Path, work_dir: Path, *extra: str) -> list:
    """The command line of ``tools/train.py`` with this interpreter."""
    return [
        sys.executable,
        str(ROOT / 'tools/train.py'),
        str(config), '--work-dir',
        str(work_dir), *extra
    ]


def read_losses(work_dir: Path) -> dict:
    """Iteration -> loss from every scalars.json under the work dir."""
    losses = {}
    for log in sorted(work_dir.glob('*/vis_data/scalars.json')):
        for line in log.read_text().splitlines():
            record = json.loads(line)
            if 'loss' in record:
                losses[record['iter']] = record['loss']
    return losses
