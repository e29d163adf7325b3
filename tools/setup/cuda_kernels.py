"""List the GPU architectures and kernels compiled into an extension.

Reads the ``.nv_fatbin`` section of a shared library (by default mmcv's
``mmcv/_ext*.so``) without CUDA tools, for machines that have ``nvcc`` but
not ``cuobjdump``. Each fatbin entry names its kind (SASS machine code for
one ``sm_XY``, or PTX) and architecture; the kernels are the ``.text.*``
sections of each machine-code image. ``--require`` checks that every named
kernel family has machine code for every architecture found (the set-up of
the mmcv CUDA build uses it with the ops eva_mm runs on the GPU).

Example::

    python tools/setup/cuda_kernels.py --require roi_align nms \\
        ms_deformable_im2col
"""
import argparse
import glob
import os
import struct
import subprocess
import sys
from collections import defaultdict
from typing import Dict, Iterator, List, Optional, Sequence, Set, Tuple

FATBIN_MAGIC = 0xBA55ED50
KIND_PTX, KIND_SASS = 1, 2
COMPRESSED = 0x2000
# The kernel families eva_mm runs on the GPU through mmcv: RoIAlign (Mask
# R-CNN heads), NMS / soft-NMS, multi-scale deformable attention (ViT-Adapter,
# Mask2Former).
PROJECT_KERNELS = ('roi_align', 'nms', 'ms_deformable_im2col',
                   'ms_deformable_col2im')


def _sections(data: bytes) -> Dict[str, Tuple[int, int]]:
    """Name -> (offset, size) of the sections of a 64-bit little-endian ELF."""
    if data[:4] != b'\x7fELF' or data[4] != 2:
        raise ValueError('not a 64-bit ELF file')
    shoff, = struct.unpack_from('<Q', data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from('<HHH', data, 0x3A)
    headers = [
        struct.unpack_from('<IIQQQQIIQQ', data, shoff + i * shentsize)
        for i in range(shnum)
    ]
    names_offset = headers[shstrndx][4]

    def name(offset: int) -> str:
        start = names_offset + offset
        return data[start:data.index(b'\0', start)].decode()

    return {name(h[0]): (h[4], h[5]) for h in headers}


def fatbin_entries(fatbin: bytes) -> Iterator[Tuple[int, int, bytes, int]]:
    """(kind, sm, payload, flags) of every entry of every fatbin in a
    ``.nv_fatbin`` section."""
    pos = 0
    while pos + 16 <= len(fatbin):
        magic, _, header_size, fat_size = struct.unpack_from(
            '<IHHQ', fatbin, pos)
        if magic != FATBIN_MAGIC:
            # Fatbins are 8-byte aligned; skip padding between them.
            pos += 8
            continue
        entry = pos + header_size
        end = entry + fat_size
        while entry < end:
            kind, _, entry_header, size = struct.unpack_from(
                '<HHIQ', fatbin, entry)
            arch, = struct.unpack_from('<I', fatbin, entry + 28)
            flags, = struct.unpack_from('<Q', fatbin, entry + 40)
            payload = fatbin[entry + entry_header:entry + entry_header + size]
            yield kind, arch, payload, flags
            entry += entry_header + size
        pos = end


def kernels(cubin: bytes) -> List[str]:
    """Mangled names of the kernels in one machine-code image."""
    return sorted(name[len('.text.'):] for name in _sections(cubin)
                  if name.startswith('.text.'))


def demangle(names: Sequence[str]) -> List[str]:
    """Names through ``c++filt`` when it is installed, else unchanged."""
    try:
        out = subprocess.run(['c++filt'], input='\n'.join(names),
                             capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return list(names)
    return out.stdout.splitlines()


def inspect(path: str) -> dict:
    """Architectures, PTX and kernel names of the library at ``path``."""
    with open(path, 'rb') as file:
        data = file.read()
    sections = _sections(data)
    if '.nv_fatbin' not in sections:
        return dict(path=path, sass={}, ptx=[], compressed=0)
    offset, size = sections['.nv_fatbin']
    sass: Dict[str, Set[str]] = defaultdict(set)
    ptx: Set[str] = set()
    compressed = 0
    for kind, arch, payload, flags in fatbin_entries(data[offset:offset +
                                                          size]):
        if flags & COMPRESSED:
            compressed += 1
            sass.setdefault(f'sm_{arch}', set())
        elif kind == KIND_SASS:
            sass[f'sm_{arch}'].update(kernels(payload))
        elif kind == KIND_PTX:
            ptx.add(f'compute_{arch}')
    return dict(path=path, sass={k: sorted(v) for k, v in sass.items()},
                ptx=sorted(ptx), compressed=compressed)


def default_library() -> Optional[str]:
    import importlib.util
    spec = importlib.util.find_spec('mmcv')
    if spec is None or not spec.submodule_search_locations:
        return None
    found = glob.glob(
        os.path.join(spec.submodule_search_locations[0], '_ext*.so'))
    return found[0] if found else None


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('library', nargs='?',
                        help="a .so file (default: mmcv's _ext)")
    parser.add_argument('--require', nargs='*', metavar='NAME',
                        help='kernel name parts that must have machine code '
                        'for every architecture (no names: '
                        f'{" ".join(PROJECT_KERNELS)})')
    args = parser.parse_args(argv)
    path = args.library or default_library()
    if path is None:
        parser.error('mmcv is not installed; give the library path.')
    info = inspect(path)
    print(f'{path}')
    if not info['sass'] and not info['ptx']:
        print('  no CUDA code (a CPU-only build)')
        return 1 if args.require is not None else 0
    print(f'  machine code: {", ".join(sorted(info["sass"])) or "none"}; '
          f'PTX: {", ".join(info["ptx"]) or "none"}'
          + (f'; {info["compressed"]} compressed entries (names not read)'
             if info['compressed'] else ''))
    missing = []
    required = args.require if args.require else PROJECT_KERNELS
    for arch, names in sorted(info['sass'].items()):
        readable = demangle(names)
        print(f'  {arch}: {len(names)} kernels')
        if args.require is None:
            continue
        for part in required:
            hits = [n for n in readable if part in n]
            print(f'    {part}: {len(hits)}'
                  + (f' (e.g. {hits[0][:100]})' if hits else ''))
            if not hits:
                missing.append(f'{part} on {arch}')
    if missing:
        print(f'missing: {", ".join(missing)}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
