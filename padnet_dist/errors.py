"""Errors caused by the user's input. The CLI prints them as one line naming the thing and the fix."""


class UserError(Exception):
    """Bad input (missing file, corrupt shard, misspelt key, ...): one line, no traceback."""
