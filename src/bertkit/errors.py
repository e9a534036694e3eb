"""The one exception type for mistakes a user can fix: the CLI prints it as one line and exits with code 2."""


class UserError(ValueError):
    """Bad input, a bad flag or a bad file. The message is one line that names what to fix."""
