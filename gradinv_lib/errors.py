"""User-facing exceptions: every error a user can cause is one of these, with a message that says
what was expected and what was found (the CLI prints it as one line and exits non-zero)."""


class GradInvError(Exception):
    """Base class for errors caused by input, files or environment rather than by a bug."""


class MissingAssetError(GradInvError, FileNotFoundError):
    """A weight file, data folder or package asset is absent; the message says where to put it."""


class InputError(GradInvError, ValueError):
    """An argument, tensor or file does not have the expected shape, range, dtype or content."""
