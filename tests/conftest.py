"""Shared test set-up: makes tests/ importable (for the helpers shared by
several test folders), gives each test its own registry scope, serves
files over HTTP on 127.0.0.1 (``file_server``), keeps downloads in the
test's folder (``checkpoint_cache``) and torch.compile's caches in the
session's."""
import os
from pathlib import Path
from typing import Iterator

import pytest
import torch
from mmengine.registry import DefaultScope

from file_server import FileServer


@pytest.fixture(scope='session', autouse=True)
def compile_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Inductor's on-disk caches in this session's folder (subprocesses
    included): its keys do not cover a custom op's fake kernel, so graphs
    cached by an earlier checkout on the same machine could be reused."""
    previous = os.environ.get('TORCHINDUCTOR_CACHE_DIR')
    os.environ['TORCHINDUCTOR_CACHE_DIR'] = str(
        tmp_path_factory.mktemp('torchinductor'))
    yield
    if previous is None:
        del os.environ['TORCHINDUCTOR_CACHE_DIR']
    else:
        os.environ['TORCHINDUCTOR_CACHE_DIR'] = previous


@pytest.fixture(autouse=True)
def registry_scope(request: pytest.FixtureRequest) -> Iterator[None]:
    """Runs a ``registry_scope('mmdet')``-marked test in that default scope.

    mmengine keeps every ``DefaultScope`` ever created (by
    ``init_default_scope`` or a ``Runner``) and the newest one decides where
    unscoped type names are looked up, so a scope left behind by one test
    would change what the next one builds. ``overwrite_default_scope``
    restores the scopes present before the test when it exits.
    Unmarked tests run as they are.
    """
    marker = request.node.get_closest_marker('registry_scope')
    if marker is None:
        yield
        return
    with DefaultScope.overwrite_default_scope(marker.args[0]):
        yield


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    """A :class:`~file_server.FileServer` on 127.0.0.1 for this test: the
    stand-in for the Hugging Face hub (no internet needed)."""
    server = FileServer()
    yield server
    server.close()


@pytest.fixture
def checkpoint_cache(tmp_path: Path,
                     monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """torch hub's checkpoint cache in this test's folder, for the
    downloads of this process and (``TORCH_HOME``) of its subprocesses.

    Yields:
        The cache folder, ``tmp_path/torch/hub/checkpoints``.
    """
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    # An earlier torch.hub.set_dir fixes the folder whatever TORCH_HOME says.
    hub_dir = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / 'torch' / 'hub'))
    yield tmp_path / 'torch' / 'hub' / 'checkpoints'
    torch.hub.set_dir(hub_dir)
