"""Exceptions raised by ast-audio: each message names the file or value at fault and what was expected."""


class ASTAudioError(Exception):
    """Base class of the errors this package raises on purpose."""


class ConfigError(ASTAudioError, ValueError):
    """A config value is missing, of the wrong type or inconsistent with another."""


class CheckpointError(ASTAudioError, ValueError):
    """A checkpoint file is corrupt, truncated, or does not fit the model."""


class CheckpointNotFoundError(ASTAudioError, OSError):
    """A checkpoint could not be found locally nor fetched from the Hugging Face Hub."""


class InputShapeError(ASTAudioError, ValueError):
    """A tensor given to the model does not have the shape the config expects."""


class AudioError(ASTAudioError, ValueError):
    """Audio that cannot be decoded or used: unreadable file, empty, too short, NaN/inf samples, wrong rate."""


class NotAudioError(AudioError):
    """No decoder recognises the data as audio: not an audio file at all."""


class DamagedAudioError(AudioError):
    """A recognisable audio container from which nothing decodes: damaged, or cut off before what decoding needs
    (an MP4/M4A without its index, the moov atom)."""


class UsageError(ConfigError):
    """A command-line argument that cannot work, found before any work starts (the command exits 2)."""
