"""Dependencies injected into routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, UploadFile

from provenance.errors import InputError, PayloadTooLargeError
from provenance.services import Services


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


def read_upload(upload: UploadFile | None, limit: int) -> bytes:
    """Read an upload, refusing it as soon as it passes ``limit`` bytes."""
    if upload is None:
        raise InputError("Send the image as a multipart form field named 'file'.")
    if upload.size is not None and upload.size > limit:
        raise PayloadTooLargeError(f"The file is {upload.size} bytes; the limit is {limit} bytes.")
    data = upload.file.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLargeError(f"The file is larger than the limit of {limit} bytes.")
    return data
