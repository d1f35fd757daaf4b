"""User-facing errors: the CLI prints their message as one line and exits 2."""


class OptbenchError(ValueError):
    """Bad input from the user (unknown name, malformed spec, impossible option).

    The message must name the bad value and, where there is a short list, what would be valid.
    """


class NotApplicable(OptbenchError):
    """A valid entry that cannot run on this particular problem (e.g. SparseAdam on dense weights).

    Inside a grid this is data: the run is recorded with status ``invalid`` and this message as reason.
    """
