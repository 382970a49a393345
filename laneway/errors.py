"""Errors the `laneway` command maps to exit codes: BadInput is 2, anything else is 1."""


class BadInput(Exception):
    """The user's input is wrong. The message names the file, the field and the fix."""
