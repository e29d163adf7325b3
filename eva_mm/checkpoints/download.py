"""Downloads that never leave an incomplete checkpoint under its final name.

Files go to torch hub's checkpoint cache, ``torch.hub.get_dir()/
checkpoints`` (``$TORCH_HOME/hub/checkpoints``), the folder and file name
(the last part of the URL) that mmengine's ``load_checkpoint`` of an
``http(s)://`` path uses, so either finds what the other fetched. A file
that is already there is used without touching the network.

``torch.hub.download_url_to_file``, which mmengine's URL loading goes
through, stops reading when the server closes the connection and moves
whatever arrived to the destination: a 127.0.0.1 server that announces 4 MB
and closes after 2 MB leaves a 2 MB file that every later run loads from
the cache. :func:`download_file` streams to a temporary name in the same
folder, compares the length with the ``Content-Length`` the server
announced and the SHA-256 with the expected one where known, checks the
file (:func:`check_checkpoint_file` for checkpoints), and only then renames
it (``os.replace``, atomic within a folder). On any failure the temporary
file is removed and one :class:`DownloadError` says which file, what was
expected and what to do.
"""
import hashlib
import http.client
import json
import os
import struct
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import Callable, Optional, Union

from .errors import CheckpointError

PathLike = Union[str, Path]

# Bytes per read: large enough for full speed, small enough for a smooth
# progress bar.
CHUNK_SIZE = 1 << 20
# A legacy torch.save file: pickle protocol 2 (0x80 0x02), then its magic
# number as a 10-byte long (0x8a 0x0a) (torch/serialization.py).
_LEGACY_TORCH_MAGIC = b'\x80\x02\x8a\x0a'


# Subclasses of CheckpointError: an entry point that loads a checkpoint
# catches one family of errors, whether the file failed to arrive or to load.
class DownloadError(CheckpointError):
    """A download failed or gave a file that cannot be the expected one."""


class IncompleteCheckpointError(CheckpointError):
    """A checkpoint file is truncated or not a checkpoint at all."""


def checkpoint_cache_dir(cache_dir: Optional[PathLike] = None) -> Path:
    """The folder downloaded checkpoints are kept in.

    Args:
        cache_dir: A folder to use instead; ``None`` is torch hub's
            checkpoint folder, ``torch.hub.get_dir()/checkpoints`` (set
            ``TORCH_HOME`` or ``torch.hub.set_dir`` to move it), as
            mmengine's URL loading uses it.

    Returns:
        The folder (not created here).
    """
    if cache_dir is not None:
        return Path(cache_dir)
    import torch.hub  # here: importing eva_mm.checkpoints stays light
    return Path(torch.hub.get_dir()) / 'checkpoints'


def url_file_name(url: str) -> str:
    """The file name of a URL: its path's last part, as torch hub names it.

    Args:
        url: An ``http(s)://`` URL.

    Returns:
        The unquoted last part of the URL's path.

    Raises:
        ValueError: If the URL's path ends with ``/`` (no file name).
    """
    name = os.path.basename(urllib.parse.urlparse(url).path)
    if not name:
        raise ValueError(f'{url} names no file (its path ends with "/").')
    return urllib.parse.unquote(name)


def _check_safetensors(path: Path, size: int) -> None:
    # safetensors: 8-byte little-endian header length, a JSON header whose
    # data_offsets index the bytes after it; those end at the file's end.
    with open(path, 'rb') as file:
        (header_len, ) = struct.unpack('<Q', file.read(8))
        if 8 + header_len > size:
            raise IncompleteCheckpointError(
                f'{path} is a truncated safetensors file: its header alone '
                f'needs {8 + header_len} bytes, the file has {size}.')
        header = json.loads(file.read(header_len))
    end = max((entry['data_offsets'][1] for key, entry in header.items()
               if key != '__metadata__'), default=0)
    if 8 + header_len + end != size:
        raise IncompleteCheckpointError(
            f'{path} is an incomplete safetensors file: its header '
            f'describes {8 + header_len + end} bytes, the file has {size}.')


def check_checkpoint_file(path: PathLike) -> None:
    """Cheaply check that a file is a complete checkpoint.

    A PyTorch zip file (``torch.save`` since 1.6) keeps its directory at the
    end, so a truncated one has none (``zipfile.is_zipfile``); a
    safetensors file's header gives its exact length. A legacy (pre-zip)
    PyTorch pickle has no such mark and passes on its magic bytes alone.
    Nothing is unpickled.

    Args:
        path: The file.

    Raises:
        FileNotFoundError: If there is no such file.
        IncompleteCheckpointError: If the file is empty, truncated, or
            neither a PyTorch nor a safetensors file (an HTML error page
            saved by a proxy, say), with what to do.
    """
    path = Path(path)
    size = path.stat().st_size
    fix = (' Delete it and download it again (python tools/model_zoo.py '
           'download NAME fetches it completely or not at all), or copy a '
           'complete copy to that path.')
    if size == 0:
        raise IncompleteCheckpointError(f'{path} is empty.' + fix)
    with open(path, 'rb') as file:
        head = file.read(9)
    if head.startswith(b'PK\x03\x04'):
        if not zipfile.is_zipfile(path):
            raise IncompleteCheckpointError(
                f'{path} ({size} bytes) is a truncated PyTorch zip '
                'checkpoint: the end of the file (its zip directory) is '
                'missing.' + fix)
        return
    if head.startswith(_LEGACY_TORCH_MAGIC):
        return  # a pre-zip torch.save pickle: no length to check
    if head[8:9] == b'{':  # safetensors: the JSON header after its length
        try:
            _check_safetensors(path, size)
        except (ValueError, KeyError, TypeError, IndexError) as err:
            raise IncompleteCheckpointError(
                f'{path} has a broken safetensors header ({err}).' +
                fix) from err
        return
    raise IncompleteCheckpointError(
        f'{path} ({size} bytes, starting with {head!r}) is no checkpoint: '
        'neither a PyTorch (zip or legacy) nor a safetensors file.' + fix)


def download_file(url: str,
                  dst: PathLike,
                  sha256: Optional[str] = None,
                  progress: bool = True,
                  timeout: float = 60.,
                  check: Optional[Callable[[Path], None]] = None) -> Path:
    """Download ``url`` to ``dst`` completely or not at all.

    The body is streamed to a temporary file beside ``dst`` and renamed to
    ``dst`` only after its length matched the ``Content-Length`` the server
    announced, its SHA-256 matched ``sha256`` (if given) and ``check``
    passed; on any failure the temporary file is removed and ``dst`` is
    left as it was.

    Args:
        url: The ``http(s)://`` URL (redirects are followed).
        dst: The destination file; its folder is created.
        sha256: The expected SHA-256, hex; ``None`` checks no hash.
        progress: Show a progress bar (tqdm, on stderr).
        timeout: Seconds to wait for the connection and for each read.
        check: Called with the temporary file before the rename; raises for
            a file that must not be kept (e.g. :func:`check_checkpoint_file`).

    Returns:
        ``dst`` as a :class:`~pathlib.Path`.

    Raises:
        DownloadError: The server could not be reached, answered with an
            error, closed the connection early, or sent a file of another
            length or hash, or ``check`` refused it.
    """
    from tqdm import tqdm

    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    # Beside dst, so that the final rename stays within one file system; a
    # name no reader looks for.
    fd, tmp_name = tempfile.mkstemp(
        dir=dst.parent, prefix=f'.{dst.name}.', suffix='.part')
    tmp = Path(tmp_name)
    retry = (f'Nothing was written to {dst}; run the download again (a '
             'complete file is then kept).')
    try:
        digest = hashlib.sha256()
        written = 0
        request = urllib.request.Request(
            url, headers={'User-Agent': 'eva_mm'})
        with os.fdopen(fd, 'wb') as out, urllib.request.urlopen(
                request, timeout=timeout) as response:
            announced = response.headers.get('Content-Length')
            expected = int(announced) if announced is not None else None
            with tqdm(
                    total=expected,
                    unit='B',
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=dst.name,
                    disable=not progress) as bar:
                while True:
                    chunk = response.read(CHUNK_SIZE)
                    if not chunk:
                        break
                    out.write(chunk)
                    digest.update(chunk)
                    written += len(chunk)
                    bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        if expected is not None and written != expected:
            raise DownloadError(
                f'Download of {url} ended after {written} of the '
                f'{expected} bytes the server announced (connection closed '
                f'early). {retry}')
        if sha256 is not None and digest.hexdigest() != sha256.lower():
            raise DownloadError(
                f'{url} gave a file with SHA-256 {digest.hexdigest()}, not '
                f'the expected {sha256.lower()} ({written} bytes): a '
                'corrupted transfer or a changed file on the server. '
                f'{retry} If it fails again, the URL serves another file '
                'than the one listed; report it.')
        if check is not None:
            try:
                check(tmp)
            except IncompleteCheckpointError as err:
                raise DownloadError(
                    f'{url} gave {written} bytes that are no complete '
                    f'checkpoint: {err} {retry}') from err
        os.replace(tmp, dst)
    except urllib.error.HTTPError as err:
        raise DownloadError(
            f'{url} answered HTTP {err.code} ({err.reason}). {retry} Check '
            'the URL; a gated file needs access granted first.') from err
    except (urllib.error.URLError, http.client.HTTPException,
            OSError) as err:
        raise DownloadError(
            f'Downloading {url} to {dst} failed: {err}. {retry} Offline, '
            f'put a complete copy of the file at {dst}.') from err
    finally:
        tmp.unlink(missing_ok=True)
    return dst


def download_checkpoint(url: str,
                        cache_dir: Optional[PathLike] = None,
                        sha256: Optional[str] = None,
                        file_name: Optional[str] = None,
                        progress: bool = True,
                        timeout: float = 60.) -> Path:
    """The cached checkpoint of ``url``, downloaded first if absent.

    A file already in the cache is used as it is, without network access
    (offline use), after :func:`check_checkpoint_file`; a missing one is
    fetched with :func:`download_file` and checked the same way before it
    gets its name.

    Args:
        url: The ``http(s)://`` URL of the checkpoint.
        cache_dir: The folder; ``None`` is torch hub's checkpoint cache
            (:func:`checkpoint_cache_dir`).
        sha256: The expected SHA-256 of a download, hex, where known.
        file_name: The cached file's name; ``None`` is the URL's
            (:func:`url_file_name`), the name mmengine's URL loading looks
            for.
        progress: Show a progress bar while downloading.
        timeout: Seconds to wait for the connection and for each read.

    Returns:
        The path of the complete checkpoint.

    Raises:
        DownloadError: See :func:`download_file`.
        IncompleteCheckpointError: If the cached file is truncated or no
            checkpoint (say, left by an interrupted ``torch.hub`` download).
    """
    dst = checkpoint_cache_dir(cache_dir) / (file_name or url_file_name(url))
    if dst.is_file():
        check_checkpoint_file(dst)
        return dst
    return download_file(url, dst, sha256=sha256, progress=progress,
                         timeout=timeout, check=check_checkpoint_file)
