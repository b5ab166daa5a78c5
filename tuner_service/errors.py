"""Exceptions raised by the core; the API translates each into one problem+json response."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    """One problem with one input field, named by its dotted path (``search_space.lr.min``)."""

    field: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"field": self.field, "reason": self.reason}


class TunerError(Exception):
    """Base class of every error the core raises on purpose."""

    status = 500
    title = "Internal error"


class InvalidInput(TunerError):
    """The caller sent something we cannot accept; ``errors`` lists every problem found."""

    status = 422
    title = "Invalid input"

    def __init__(self, errors: list[FieldError] | FieldError) -> None:
        self.errors = [errors] if isinstance(errors, FieldError) else list(errors)
        super().__init__("; ".join(f"{e.field}: {e.reason}" for e in self.errors))

    @classmethod
    def one(cls, field: str, reason: str) -> InvalidInput:
        return cls([FieldError(field, reason)])


class InvalidSearchSpace(InvalidInput):
    """The search space failed validation."""

    title = "Invalid search space"


class InvalidDataset(InvalidInput):
    """An uploaded or referenced data set cannot be used."""

    title = "Invalid data set"


class PayloadTooLarge(InvalidInput):
    """An upload is over the configured size limit."""

    status = 413
    title = "Payload too large"


class NotFound(TunerError):
    """A resource the caller named does not exist."""

    status = 404
    title = "Not found"

    def __init__(self, resource: str, key: object, field: str | None = None) -> None:
        self.resource = resource
        self.key = key
        self.field = field
        super().__init__(f"{resource} {key!r} does not exist")


class Conflict(TunerError):
    """The request is valid but the resource's state does not allow it now."""

    status = 409
    title = "Conflict"


class ServiceUnavailable(TunerError):
    """A dependency (database, broker) does not answer now; the caller should retry after ``retry_after_s``."""

    status = 503
    title = "Service unavailable"
    dependency = "unknown"

    def __init__(self, detail: str, retry_after_s: int = 5) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(detail)


class DatabaseUnavailable(ServiceUnavailable):
    """The database refused or dropped the connection (restart, failover, network)."""

    title = "Database unavailable"
    dependency = "database"


class BrokerUnavailable(ServiceUnavailable):
    """The message broker (Redis) does not accept messages."""

    title = "Broker unavailable"
    dependency = "broker"


class InvalidHeader(InvalidInput):
    """A request header is malformed (400, naming the header as the field)."""

    status = 400
    title = "Bad request"
