"""Errors that map to HTTP statuses. Each message tells the caller what to fix."""

from __future__ import annotations

from typing import Any


class MaasError(Exception):
    """Base error: an HTTP status, a stable machine-readable code and a human message."""

    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.details = details


def printable(text: str) -> str:
    """``text`` with what UTF-8 cannot carry (a lone surrogate such as ``\\ud800``, quoted from a caller's input)
    replaced by U+FFFD, so an error message about bad text can always be sent."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


class SettingsError(MaasError):
    """The runtime's configuration (``MAAS_*``) is unsafe or malformed; raised at init, before any request."""

    status_code = 500
    code = "config_invalid"


class InvalidInputError(MaasError):
    status_code = 422
    code = "invalid_input"


class PayloadTooLargeError(MaasError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaTypeError(MaasError):
    status_code = 415
    code = "unsupported_media_type"


class ClientDisconnectedError(MaasError):
    """The caller went away while its request was being worked on; the work stops (nginx's 499)."""

    status_code = 499
    code = "client_disconnected"


class ModelNotFoundError(MaasError):
    status_code = 404
    code = "model_not_found"


class ModelNotReadyError(MaasError):
    status_code = 503
    code = "model_not_ready"


class UnsupportedOperationError(MaasError):
    """The model exists but its task does not offer this operation (e.g. embeddings of a classifier)."""

    status_code = 400
    code = "unsupported_for_model"


class ArtifactError(MaasError):
    """An artifact could not be used: missing files, bad manifest, or unsafe content."""

    status_code = 503
    code = "artifact_invalid"


class IntegrityError(ArtifactError):
    """A file's sha256 does not match the manifest: the artifact was corrupted or tampered with."""

    code = "artifact_integrity"
