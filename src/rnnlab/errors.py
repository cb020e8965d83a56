"""The one exception type for mistakes a user can make.

Library code raises :class:`RnnlabError` with a message that names the problem and
says what to do about it. The command line turns it into a one-line message on
stderr and exit status 2; anything else escaping is a bug in rnnlab.
"""


class RnnlabError(Exception):
    """A problem with the user's input, options or files (not a bug in rnnlab)."""


class ReportedElsewhere(RnnlabError):
    """An error another process of the same data-parallel run reports: this one stops
    with exit status 2 and prints nothing, so the user reads the message once."""
