"""Exceptions that carry a message meant for the user.

Library code raises these (or ``ValueError`` for bad arguments) with a message that names the
file, line, field or value at fault; the CLI prints the message on one line and exits with 2.
"""


class ScratchLLMError(Exception):
    """Base class for errors whose message is shown to the user as is."""


class DataError(ScratchLLMError, ValueError):
    """A corpus, data file or record that cannot be used (names the path and the numbers)."""


class TokenizerError(ScratchLLMError, ValueError):
    """A tokenizer file or tokenizer input that cannot be used."""


class CheckpointError(ScratchLLMError, ValueError):
    """A run directory or checkpoint that is missing, incomplete or does not match."""


class ConfigError(ScratchLLMError, ValueError):
    """A configuration field with an invalid value."""
