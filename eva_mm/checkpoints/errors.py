"""The errors of eva_mm's checkpoint code, and the tool they point users to."""

# Official EVA-01/EVA-02, timm and open_clip files are converted with this
# tool; errors about files of another layout name it.
CONVERTER = 'tools/model_converters/convert_eva.py'


class CheckpointError(RuntimeError):
    """A file that cannot be read or converted as an EVA checkpoint."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint whose keys or shapes do not fit the model."""


class CheckpointFormatError(CheckpointError):
    """A checkpoint format that is unknown, or a file that several formats
    recognise."""
