"""Errors that name a user's mistake and its fix."""


class UserInputError(Exception):
    """Bad input from the user: the CLI prints it as one line and exits 2.

    The message must name what was wrong (a path, a column, a flag) and what
    was expected instead.
    """
