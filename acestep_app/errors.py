"""The project's error types, shared by every adapter."""


class InputError(ValueError):
    """A request value that passed the schema but cannot be served.

    Adapters map it to a 422 that names ``field`` (fal ``FieldException``, FastAPI 422).
    """

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class WeightsError(RuntimeError):
    """Weights are missing, incomplete or fail their digest check."""
