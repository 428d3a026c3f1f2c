"""The exception every failure of the library surfaces as."""

STATUS_NAMES = {
    1: "io",
    2: "format",
    3: "invalid_arg",
    4: "nomem",
    5: "unsupported",
    6: "context",
}


class OptiqError(RuntimeError):
    """A liboptiq call failed. ``str(e)`` is the library's message; ``e.status`` its
    optiq_status code (0 when the failure came from the binding itself) and
    ``e.kind`` that code's short name ("io", "format", "invalid_arg", "nomem",
    "unsupported", "context")."""

    def __init__(self, message, status=0):
        super().__init__(message)
        self.status = status
        self.kind = STATUS_NAMES.get(status)
