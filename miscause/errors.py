"""The one exception type the CLI turns into a single error line and a non-zero exit."""


class MiscauseError(Exception):
    """Bad input from a user: a path, a file, an option. The message says what is wrong."""
