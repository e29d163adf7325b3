"""The tiny EVA CLIP config of tiny_eva_clip.py, registered with open_clip."""
import json
from pathlib import Path

import pytest
from tiny_eva_clip import CLIP_NAME, tiny_clip_config


@pytest.fixture(scope='session')
def clip_config_file(tmp_path_factory) -> Path:
    """The tiny config as a JSON file, registered with open_clip."""
    import open_clip
    path = tmp_path_factory.mktemp('clip_cfg') / f'{CLIP_NAME}.json'
    path.write_text(json.dumps(tiny_clip_config()))
    open_clip.add_model_config(path)
    return path
