"""eva_mm.checkpoints.download against a local HTTP server.

The server (tests/file_server.py) stands in for the Hugging Face hub: it
serves synthetic bytes and small checkpoints, counts requests, and can
announce a Content-Length and close the connection after half of the body.
"""
import hashlib
import io
import json
import struct
from pathlib import Path
from typing import Dict

import pytest
import torch

from eva_mm.checkpoints.download import (DownloadError,
                                         IncompleteCheckpointError,
                                         check_checkpoint_file,
                                         checkpoint_cache_dir,
                                         download_checkpoint, download_file)
from file_server import FileServer
from released_layouts import tiny_official_eva01


def checkpoint_bytes(state: Dict[str, torch.Tensor], **save_options) -> bytes:
    """``torch.save(state)`` as bytes (a zip file unless told otherwise)."""
    buffer = io.BytesIO()
    torch.save(state, buffer, **save_options)
    return buffer.getvalue()


def assert_only(folder: Path, *names: str) -> None:
    """``folder`` holds exactly these files: no temporary leftovers."""
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)


def test_download_then_cache_hit_without_a_request(file_server: FileServer,
                                                   tmp_path: Path) -> None:
    source = tiny_official_eva01()
    data = checkpoint_bytes(source)
    url = file_server.add('/BAAI/EVA/resolve/main/eva_tiny.pt', data)

    path = download_checkpoint(url, cache_dir=tmp_path, progress=False)
    assert path == tmp_path / 'eva_tiny.pt'
    assert path.read_bytes() == data
    loaded = torch.load(path, weights_only=True)
    assert loaded.keys() == source.keys()
    for key, value in source['module'].items():
        assert torch.equal(loaded['module'][key], value), key
    assert file_server.requests['/BAAI/EVA/resolve/main/eva_tiny.pt'] == 1
    assert_only(tmp_path, 'eva_tiny.pt')

    # Cached: no request, the same file.
    assert download_checkpoint(url, cache_dir=tmp_path) == path
    assert file_server.requests['/BAAI/EVA/resolve/main/eva_tiny.pt'] == 1


def test_default_cache_is_the_one_mmengine_and_torch_hub_read(
        file_server: FileServer, tmp_path: Path) -> None:
    """torch hub's checkpoint folder, the file named by its URL: torch's
    load_state_dict_from_url (mmengine's load_url) then finds the download
    and makes no request of its own."""
    state = {'weight': torch.arange(6.).reshape(2, 3)}
    url = file_server.add('/BAAI/EVA/resolve/main/tiny.pth',
                          checkpoint_bytes(state))
    hub_dir = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / 'hub'))
    try:
        assert checkpoint_cache_dir() == tmp_path / 'hub' / 'checkpoints'
        path = download_checkpoint(url, progress=False)
        assert path == tmp_path / 'hub' / 'checkpoints' / 'tiny.pth'
        loaded = torch.hub.load_state_dict_from_url(url, weights_only=True)
    finally:
        torch.hub.set_dir(hub_dir)
    assert torch.equal(loaded['weight'], state['weight'])
    assert file_server.requests['/BAAI/EVA/resolve/main/tiny.pth'] == 1


def test_sha256_checked_and_nothing_kept_on_mismatch(
        file_server: FileServer, tmp_path: Path) -> None:
    data = bytes(range(256)) * 1000  # synthetic bytes, no checkpoint
    url = file_server.add('/blob.bin', data)
    wrong = hashlib.sha256(b'another file').hexdigest()
    with pytest.raises(DownloadError) as error:
        download_file(url, tmp_path / 'blob.bin', sha256=wrong,
                      progress=False)
    message = str(error.value)
    assert hashlib.sha256(data).hexdigest() in message and wrong in message
    assert 'Nothing was written' in message and url in message
    assert_only(tmp_path)

    right = hashlib.sha256(data).hexdigest().upper()  # case does not matter
    path = download_file(url, tmp_path / 'blob.bin', sha256=right,
                         progress=False)
    assert path.read_bytes() == data
    assert_only(tmp_path, 'blob.bin')


def test_interrupted_download_leaves_nothing_then_completes(
        file_server: FileServer, tmp_path: Path) -> None:
    data = checkpoint_bytes({'weight': torch.randn(64, 1024)})
    half = len(data) // 2
    url = file_server.add('/eva_lvis.pth', data, stop_after=half)
    with pytest.raises(DownloadError,
                       match=f'ended after {half} of the {len(data)} bytes'):
        download_checkpoint(url, cache_dir=tmp_path, progress=False)
    assert_only(tmp_path)

    # The server is fixed: a later run downloads the whole file.
    file_server.add('/eva_lvis.pth', data)
    path = download_checkpoint(url, cache_dir=tmp_path, progress=False)
    assert path.read_bytes() == data
    assert file_server.requests['/eva_lvis.pth'] == 2


def test_without_content_length_the_checkpoint_check_decides(
        file_server: FileServer, tmp_path: Path) -> None:
    """No announced length: a body cut short is still caught, by the zip
    directory missing from the end of the file."""
    data = checkpoint_bytes({'weight': torch.randn(64, 1024)})
    url = file_server.add('/cut.pth', data, stop_after=len(data) // 2,
                          content_length=False)
    with pytest.raises(DownloadError, match='no complete checkpoint'):
        download_checkpoint(url, cache_dir=tmp_path, progress=False)
    assert_only(tmp_path)
    file_server.add('/cut.pth', data, content_length=False)
    path = download_checkpoint(url, cache_dir=tmp_path, progress=False)
    assert path.read_bytes() == data


def test_error_page_and_http_errors_are_refused(file_server: FileServer,
                                                tmp_path: Path) -> None:
    url = file_server.add('/gated.pth', b'<!DOCTYPE html><html>login</html>')
    with pytest.raises(DownloadError, match='no checkpoint'):
        download_checkpoint(url, cache_dir=tmp_path, progress=False)
    with pytest.raises(DownloadError, match='HTTP 404'):
        download_checkpoint(file_server.url('/missing.pth'),
                            cache_dir=tmp_path, progress=False)
    assert_only(tmp_path)


def test_offline_a_cached_file_is_used(tmp_path: Path) -> None:
    closed = FileServer()
    url = closed.url('/eva_tiny.pt')
    closed.close()  # nothing listens there any more
    with pytest.raises(DownloadError) as error:
        download_checkpoint(url, cache_dir=tmp_path, progress=False)
    assert f'put a complete copy of the file at {tmp_path}' in str(
        error.value)
    assert_only(tmp_path)

    data = checkpoint_bytes(tiny_official_eva01())
    (tmp_path / 'eva_tiny.pt').write_bytes(data)
    assert download_checkpoint(url, cache_dir=tmp_path) == (
        tmp_path / 'eva_tiny.pt')


def test_truncated_cached_file_gets_a_clear_error(tmp_path: Path) -> None:
    """A half file under the final name (what an interrupted
    torch.hub.download_url_to_file leaves) is refused, with the fix."""
    data = checkpoint_bytes({'weight': torch.randn(64, 1024)})
    (tmp_path / 'eva_lvis.pth').write_bytes(data[:len(data) // 2])
    with pytest.raises(IncompleteCheckpointError) as error:
        download_checkpoint('http://127.0.0.1:9/eva_lvis.pth',
                            cache_dir=tmp_path)
    message = str(error.value)
    assert str(tmp_path / 'eva_lvis.pth') in message
    assert 'truncated' in message and 'Delete it' in message


def safetensors_bytes(tensors: Dict[str, torch.Tensor]) -> bytes:
    """The safetensors format written out: u64 header length, JSON header
    with byte offsets, raw little-endian data."""
    header, chunks, offset = {}, [], 0
    for key, value in tensors.items():
        raw = value.contiguous().numpy().tobytes()
        header[key] = dict(dtype='F32', shape=list(value.shape),
                           data_offsets=[offset, offset + len(raw)])
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    return struct.pack('<Q', len(text)) + text + b''.join(chunks)


def test_checkpoint_file_check(tmp_path: Path) -> None:
    state = {'a': torch.randn(8, 8), 'b': torch.randn(5)}
    files = {
        'zip.pth': checkpoint_bytes(state),
        'legacy.pth': checkpoint_bytes(
            state, _use_new_zipfile_serialization=False),
        'model.safetensors': safetensors_bytes(state),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        check_checkpoint_file(tmp_path / name)
    from safetensors.torch import load_file
    loaded = load_file(str(tmp_path / 'model.safetensors'))
    assert torch.equal(loaded['a'], state['a'])

    bad = {
        'half.pth': (files['zip.pth'][:len(files['zip.pth']) // 2],
                     'truncated PyTorch zip'),
        'half.safetensors': (files['model.safetensors'][:-4],
                             'incomplete safetensors'),
        'empty.pth': (b'', 'is empty'),
        'page.pth': (b'<html>Access denied</html>', 'no checkpoint'),
    }
    for name, (data, problem) in bad.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(IncompleteCheckpointError, match=problem):
            check_checkpoint_file(tmp_path / name)
