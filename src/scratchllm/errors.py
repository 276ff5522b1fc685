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


class DisallowedSpecialError(TokenizerError):
    """Text to encode contains a special-token literal that was not allowed.

    ``token`` is the literal and ``position`` its character offset, so a caller (the CLI) can
    say how *its* user allows it instead of naming the Python arguments.
    """

    def __init__(self, message: str, token: str, position: int) -> None:
        super().__init__(message)
        self.token = token
        self.position = position


class CheckpointError(ScratchLLMError, ValueError):
    """A run directory or checkpoint that is missing, incomplete or does not match."""


class ConfigError(ScratchLLMError, ValueError):
    """A configuration field with an invalid value."""


def check_field_types(config: object, label: str | None = None) -> None:
    """Raise ConfigError for the first dataclass field whose value is not of its annotated type.

    Configs are built from TOML, JSON and ``--set`` values, so a quoted number or a word where a
    number belongs must be caught here, by name, before any comparison trips over it. Checked:
    ``int`` (not bool), ``float`` (an int is fine), ``bool``, ``str`` and ``X | None``; other
    annotations are left to the config's own checks. ``label`` names the fields in the message
    (default: the class name).
    """
    import dataclasses
    import types
    import typing

    hints = typing.get_type_hints(type(config))
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    for f in dataclasses.fields(config):  # type: ignore[arg-type]
        hint = hints[f.name]
        union = typing.get_origin(hint) in (typing.Union, types.UnionType)
        allowed = typing.get_args(hint) if union else (hint,)
        if not all(t in names or t is type(None) for t in allowed):
            continue
        value = getattr(config, f.name)
        if any(_is_instance(value, t) for t in allowed):
            continue
        wanted = " or ".join(names.get(t, "none") for t in allowed)
        raise ConfigError(
            f"{label or type(config).__name__}.{f.name} must be {wanted}, "
            f"got {value!r} ({type(value).__name__})"
        )


def _is_instance(value: object, kind: type) -> bool:
    if kind is type(None):
        return value is None
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)
