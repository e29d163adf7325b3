"""Convert EVA checkpoints of every released kind for eva_mm.

One command for every source format; ``--help`` lists them (each is a
module of ``eva_mm/checkpoints/converters/``). The output,
``{'state_dict': ..., 'meta': ...}`` of plain tensors, loads with
``mmengine.runner.load_checkpoint``, ``load_from`` or
``init_cfg=dict(type='Pretrained', checkpoint=DST)``. Example, the EVA-01
giant MIM weights at patch 16 for 1024x1024 detection::

    python tools/model_converters/convert_eva.py --src-format official \\
        eva_psz14.pt eva_psz14to16_1024.pth --patch-size 16 --img-size 1024

``--img-size`` takes ``SIZE``, ``HxW`` or ``H W``, before or after the
paths.

``--config CONFIG`` checks the result against the model of a config before
writing it: a checkpoint that would not load strictly (another model size,
class count or variant) is refused with the list of keys, and nothing is
written.
"""
import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

# Run from a checkout without installing eva_mm: the repository root holds
# the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from eva_mm.engine.safe_checkpoint import (  # noqa: E402
    register_mmengine_safe_globals)
from eva_mm.checkpoints.converters import (  # noqa: E402
    SRC_FORMATS, check_fits_config, save_converted)
from eva_mm.checkpoints.registry import add_format_arguments  # noqa: E402
from eva_mm.checkpoints.errors import CheckpointError  # noqa: E402
from eva_mm.checkpoints.reading import load_state_dict_file  # noqa: E402

# Sources written by mmengine's runner hold more than tensors.
register_mmengine_safe_globals()

# Options written with two values (``--img-size H W``). Every option takes
# one token, so that none swallows the positional SRC DST after it (argparse
# gives nargs='+' every following non-option); the two values are joined
# into the one ``HxW`` token first.
PAIR_OPTIONS = ('--img-size', )


def build_parser() -> argparse.ArgumentParser:
    """The parser: common arguments plus every format's own options."""
    formats = ' '.join(f"'{fmt.name}': {fmt.help}"
                        for fmt in SRC_FORMATS.values())
    parser = argparse.ArgumentParser(
        description='Convert EVA weights to eva_mm checkpoints.')
    parser.add_argument(
        '--src-format',
        required=True,
        choices=sorted(SRC_FORMATS),
        help=f'What the source file is. {formats}')
    parser.add_argument(
        'src', help='Source checkpoint (.pth/.pt/.bin/.safetensors).')
    parser.add_argument('dst', help='Output checkpoint (.pth).')
    parser.add_argument(
        '--config',
        help='Refuse the result (nothing is written) unless it loads '
        'strictly into the model of this config.')
    add_format_arguments(parser)
    return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse the command line.

    Args:
        argv: Arguments without the program name; ``None`` reads sys.argv.

    Returns:
        The parsed arguments.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    return build_parser().parse_args(join_pairs(argv))


def join_pairs(argv: Sequence[str]) -> list:
    """``--img-size H W`` (two numbers) rewritten as ``--img-size HxW``.

    Args:
        argv: Arguments without the program name.

    Returns:
        The arguments with each pair option's two numbers joined.
    """
    joined, rest = [], list(argv)
    while rest:
        arg = rest.pop(0)
        joined.append(arg)
        if arg in PAIR_OPTIONS and len(rest) >= 2 and \
                rest[0].isdigit() and rest[1].isdigit():
            joined.append(f'{rest.pop(0)}x{rest.pop(0)}')
    return joined


def convert(args: argparse.Namespace) -> None:
    """Convert ``args.src`` to ``args.dst`` and print what was done.

    Args:
        args: The parsed command line.
    """
    source = load_state_dict_file(args.src)
    conversion = SRC_FORMATS[args.src_format].convert(source, args)
    if args.config:
        check_fits_config(conversion.state_dict, args.config)
    meta = save_converted(conversion, args.dst, args.src, args.src_format)
    lines = [
        f'Converted {args.src} ({args.src_format}) -> {args.dst}',
        f'  {len(conversion.state_dict)} tensors, '
        f'{meta["num_params"]:,} parameters',
    ]
    lines += [f'  {line}' for line in conversion.report]
    if conversion.dropped:
        lines.append(f'  dropped {len(conversion.dropped)} key(s) without a '
                     f'counterpart: {", ".join(sorted(conversion.dropped))}')
    print('\n'.join(lines))


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Command-line entry point.

    Args:
        argv: Arguments without the program name; ``None`` reads sys.argv.
    """
    args = parse_args(argv)
    try:
        convert(args)
    except (FileNotFoundError, CheckpointError, ValueError) as err:
        raise SystemExit(f'convert_eva.py: error: {err}') from err


if __name__ == '__main__':
    main()
