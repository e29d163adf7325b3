"""Rebuild the mmaction2 1.2.0 wheel so that ``import mmaction.models`` works.

The 1.2.0 wheel on PyPI imports ``mmaction.models.localizers.drn`` but does not
ship that folder (1.1.0 has no such problem but asserts mmcv < 2.1.0, which
mmdet 3.3 / mmseg 1.2 cannot use). The DRN temporal-grounding localizer is not
used by eva_mm, so the rebuilt wheel drops its one import and is versioned
``1.2.0+evamm`` to say so. Nothing else changes; RECORD is rewritten so pip
verifies the new contents.

Usage: python patch_mmaction2.py OUT_DIR
"""
import base64
import hashlib
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

VERSION = '1.2.0'
LOCAL_VERSION = f'{VERSION}+evamm'
DRN_IMPORT = 'from .drn.drn import DRN\n'


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest())
    return 'sha256=' + digest.rstrip(b'=').decode()


def _patch(name: str, data: bytes) -> bytes:
    if name == 'mmaction/models/localizers/__init__.py':
        text = data.decode()
        if DRN_IMPORT not in text:
            raise RuntimeError('mmaction2 wheel layout changed: no DRN import '
                               'to drop in localizers/__init__.py.')
        text = text.replace(DRN_IMPORT, '').replace(", 'DRN'", '')
        return text.encode()
    if name.endswith('.dist-info/METADATA'):
        return re.sub(rb'^Version: .*$', f'Version: {LOCAL_VERSION}'.encode(),
                      data, count=1, flags=re.M)
    return data


def main(out_dir: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([
            sys.executable, '-m', 'pip', 'download', '--quiet', '--no-deps',
            f'mmaction2=={VERSION}', '-d', tmp
        ], check=True)
        src = next(Path(tmp).glob(f'mmaction2-{VERSION}-*.whl'))
        old_info = f'mmaction2-{VERSION}.dist-info/'
        new_info = f'mmaction2-{LOCAL_VERSION}.dist-info/'
        out = Path(out_dir) / src.name.replace(VERSION, LOCAL_VERSION)
        out.parent.mkdir(parents=True, exist_ok=True)
        records = []
        with zipfile.ZipFile(src) as zin, zipfile.ZipFile(
                out, 'w', zipfile.ZIP_DEFLATED) as zout:
            for info in zin.infolist():
                name = info.filename
                if name == old_info + 'RECORD':
                    continue
                data = _patch(name, zin.read(name))
                name = name.replace(old_info, new_info)
                zout.writestr(name, data)
                records.append(f'{name},{_record_hash(data)},{len(data)}')
            records.append(f'{new_info}RECORD,,')
            zout.writestr(new_info + 'RECORD', '\n'.join(records) + '\n')
    print(out)


if __name__ == '__main__':
    main(sys.argv[1])
