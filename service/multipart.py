"""Streaming multipart parser: file parts go straight to disk, hashed and size-limited.

Nothing is buffered in memory and an over-limit upload is cut off (413) as soon as it crosses.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from core.service_errors import (
    PayloadTooLargeError,
    RequestValidationProblem,
    UnsupportedMediaTypeError,
)

# Part headers and boundaries on top of the file bytes; bodies larger than the limit
# plus this are refused from Content-Length alone, before reading anything.
_ENVELOPE_BYTES = 64 * 1024
_MAX_FIELD_BYTES = 4096
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class SpooledFile:
    """One file part, written to ``path`` with its size and sha256 computed on the way."""

    field: str
    filename: str
    content_type: str
    path: Path
    bytes: int
    sha256: str


@dataclass
class SpooledUpload:
    """All parts of one multipart request; ``cleanup()`` removes the spool directory
    (as does leaving a ``with upload:`` block)."""

    directory: Path
    files: list[SpooledFile] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return sum(f.bytes for f in self.files)

    def cleanup(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> SpooledUpload:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()


def safe_filename(name: str) -> str:
    """A client filename reduced to a plain, safe basename."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = _SAFE_NAME.sub("_", base).lstrip(".")[:200]
    return base or "upload"


class _PartCollector:
    """Callbacks for `MultipartParser`: tracks headers, writes file parts to disk."""

    def __init__(self, upload: SpooledUpload, max_bytes: int, max_files: int) -> None:
        self.upload = upload
        self.max_bytes = max_bytes
        self.max_files = max_files
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._file: IO[bytes] | None = None
        self._digest: Any = None
        self._size = 0
        self._spooled: SpooledFile | None = None
        self._field_name: str | None = None
        self._field_value = bytearray()
        self._file_bytes = 0

    # header callbacks
    def on_part_begin(self) -> None:
        self._headers = {}

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field = b""
        self._header_value = b""

    def on_headers_finished(self) -> None:
        disposition, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        if disposition != b"form-data" or b"name" not in options:
            raise RequestValidationProblem("multipart part without a form-data name")
        name = options[b"name"].decode("utf-8", "replace")
        if b"filename" in options:
            if len(self.upload.files) >= self.max_files:
                raise RequestValidationProblem(f"at most {self.max_files} files per upload")
            filename = safe_filename(options[b"filename"].decode("utf-8", "replace"))
            if any(f.filename == filename for f in self.upload.files):
                raise RequestValidationProblem(f"file {filename!r} given twice")
            ctype = self._headers.get(b"content-type", b"application/octet-stream")
            content_type = parse_options_header(ctype)[0].decode("latin-1").lower()
            path = self.upload.directory / filename
            self._file = open(path, "wb")  # noqa: SIM115 (closed in on_part_end / close)
            self._digest = hashlib.sha256()
            self._size = 0
            self._spooled = SpooledFile(name, filename, content_type, path, 0, "")
            self._field_name = None
        else:
            self._field_name = name
            self._field_value = bytearray()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._file is not None:
            self._file_bytes += len(chunk)
            if self._file_bytes > self.max_bytes:
                raise PayloadTooLargeError(f"upload exceeds the limit of {self.max_bytes} bytes")
            self._digest.update(chunk)
            self._file.write(chunk)
            self._size += len(chunk)
        else:
            self._field_value += chunk
            if len(self._field_value) > _MAX_FIELD_BYTES:
                raise RequestValidationProblem(f"form field {self._field_name!r} is too long")

    def on_part_end(self) -> None:
        if self._file is not None and self._spooled is not None:
            self._file.close()
            self._file = None
            self._spooled.bytes = self._size
            self._spooled.sha256 = self._digest.hexdigest()
            self.upload.files.append(self._spooled)
            self._spooled = None
        elif self._field_name is not None:
            self.upload.fields[self._field_name] = self._field_value.decode("utf-8", "replace")
            self._field_name = None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


async def spool_multipart(
    request: Request, spool_root: Path, *, max_bytes: int, max_files: int = 4
) -> SpooledUpload:
    """Parse a ``multipart/form-data`` request body into files under a fresh spool dir.

    Raises 415 for another content type, 413 past ``max_bytes`` of file data (also
    early, from Content-Length), 422 for malformed bodies. On error nothing is left.
    """
    ctype, options = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data":
        raise UnsupportedMediaTypeError(
            f"expected multipart/form-data, got {ctype.decode('latin-1') or 'no content type'}"
        )
    boundary = options.get(b"boundary")
    if not boundary:
        raise RequestValidationProblem("multipart/form-data without a boundary")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes + _ENVELOPE_BYTES:
        raise PayloadTooLargeError(f"upload exceeds the limit of {max_bytes} bytes")

    spool_root.mkdir(parents=True, exist_ok=True)
    upload = SpooledUpload(Path(tempfile.mkdtemp(prefix="upload-", dir=spool_root)))
    collector = _PartCollector(upload, max_bytes, max_files)
    callbacks: Any = {
        "on_part_begin": collector.on_part_begin,
        "on_part_data": collector.on_part_data,
        "on_part_end": collector.on_part_end,
        "on_header_field": collector.on_header_field,
        "on_header_value": collector.on_header_value,
        "on_header_end": collector.on_header_end,
        "on_headers_finished": collector.on_headers_finished,
    }
    parser = MultipartParser(boundary, callbacks)
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except (PayloadTooLargeError, RequestValidationProblem):
        collector.close()
        upload.cleanup()
        raise
    except Exception as exc:  # malformed multipart framing
        collector.close()
        upload.cleanup()
        raise RequestValidationProblem(f"malformed multipart body: {exc}") from None
    collector.close()
    return upload
