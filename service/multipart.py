"""Streaming multipart parser: file parts go straight to disk, hashed and size-limited.

Nothing is buffered in memory beyond small form fields, and every dimension of a body is
bounded as it streams in: file bytes (`max_bytes`), the whole body including fields and
part headers (`max_bytes` + a small envelope), the number of non-file fields, each
field's bytes, each part's header bytes and the number of parts. Past any of them the
request is cut off (413, or 422 for a field count/size) and the spool is removed.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from core.service_errors import (
    PayloadTooLargeError,
    RequestValidationProblem,
    UnsupportedMediaTypeError,
)
from service.limits import content_length_over

# Part headers and boundaries on top of the file bytes; bodies larger than the limit
# plus this are refused from Content-Length alone, before reading anything.
_ENVELOPE_BYTES = 64 * 1024
_MAX_FIELD_BYTES = 4096
_MAX_FIELDS = 16
_MAX_HEADER_BYTES = 8 * 1024  # the headers of one part
_MAX_PARTS = 64
# Characters a stored file name may not keep: path separators, control and format
# characters, and what shells or object stores treat specially. Letters and digits of
# every script stay (NFC-normalised), so "模型.pt" is stored as "模型.pt".
_UNSAFE_CHARS = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]+')
_MAX_NAME_BYTES = 200


@dataclass
class SpooledFile:
    """One file part, written to ``path`` with its size and sha256 computed on the way.

    ``filename`` is the name as stored (sanitised for any file system or object
    store), ``original_filename`` the client's own (kept in the record)."""

    field: str
    filename: str
    content_type: str
    path: Path
    bytes: int
    sha256: str
    original_filename: str = ""


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
    """A client filename reduced to a safe basename that keeps its letters.

    NFC-normalised; the directory part, control/format characters and ``/\\:*?"<>|``
    go (runs become one ``_``); no leading dot; at most 200 UTF-8 bytes, cut on a
    character boundary with the extension kept."""
    base = unicodedata.normalize("NFC", name).replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(c for c in base if unicodedata.category(c) not in ("Cf", "Cs", "Co"))
    base = _UNSAFE_CHARS.sub("_", base).strip().lstrip(".")
    if len(base.encode("utf-8")) > _MAX_NAME_BYTES:
        stem, dot, ext = base.rpartition(".")
        ext = dot + ext if dot and len(ext.encode()) <= 16 else ""
        stem = base[: len(base) - len(ext)] if ext else base
        budget = _MAX_NAME_BYTES - len(ext.encode("utf-8"))
        stem = stem.encode("utf-8")[:budget].decode("utf-8", "ignore")
        base = stem + ext
    return base or "upload"


def display_filename(name: str) -> str:
    """The client's name for the record: NFC, no directory part, no control characters,
    at most 255 characters."""
    base = unicodedata.normalize("NFC", name).replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(c for c in base if unicodedata.category(c)[0] != "C").strip()
    return base[:255] or "upload"


class _PartCollector:
    """Callbacks for `MultipartParser`: tracks headers, writes file parts to disk."""

    def __init__(
        self,
        upload: SpooledUpload,
        max_bytes: int,
        max_files: int,
        *,
        max_fields: int = _MAX_FIELDS,
        max_field_bytes: int = _MAX_FIELD_BYTES,
    ) -> None:
        self.upload = upload
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.max_fields = max_fields
        self.max_field_bytes = max_field_bytes
        self._parts = 0
        self._header_bytes = 0
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
        self._header_bytes = 0
        self._parts += 1
        if self._parts > _MAX_PARTS:
            raise RequestValidationProblem(f"at most {_MAX_PARTS} parts per request")

    def _count_header(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > _MAX_HEADER_BYTES:
            raise PayloadTooLargeError(f"part headers exceed {_MAX_HEADER_BYTES} bytes")

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
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
            original = options[b"filename"].decode("utf-8", "replace")
            filename = safe_filename(original)
            if any(f.filename == filename for f in self.upload.files):
                raise RequestValidationProblem(f"file {filename!r} given twice")
            ctype = self._headers.get(b"content-type", b"application/octet-stream")
            content_type = parse_options_header(ctype)[0].decode("latin-1").lower()
            path = self.upload.directory / filename
            self._file = open(path, "wb")  # noqa: SIM115 (closed in on_part_end / close)
            self._digest = hashlib.sha256()
            self._size = 0
            self._spooled = SpooledFile(
                name, filename, content_type, path, 0, "", display_filename(original)
            )
            self._field_name = None
        else:
            if len(self.upload.fields) >= self.max_fields or name in self.upload.fields:
                raise RequestValidationProblem(
                    f"at most {self.max_fields} form fields, each given once"
                )
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
            if len(self._field_value) > self.max_field_bytes:
                raise PayloadTooLargeError(
                    f"form field {self._field_name!r} is longer than {self.max_field_bytes} bytes"
                )

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


def _refusal(exc: Exception) -> Exception:
    """The problem a body that failed to parse is answered with: our own limits as
    raised, the parser's header bounds as 413, any other framing error as 422."""
    if isinstance(exc, PayloadTooLargeError | RequestValidationProblem):
        return exc
    if isinstance(exc, MultipartParseError) and "Maximum header" in str(exc):
        return PayloadTooLargeError(f"part headers exceed the limits ({_MAX_HEADER_BYTES} bytes)")
    return RequestValidationProblem(f"malformed multipart body: {exc}")


async def spool_multipart(
    request: Request,
    spool_root: Path,
    *,
    max_bytes: int,
    max_files: int = 4,
    max_fields: int = _MAX_FIELDS,
    max_field_bytes: int = _MAX_FIELD_BYTES,
) -> SpooledUpload:
    """Parse a ``multipart/form-data`` request body into files under a fresh spool dir.

    Raises 415 for another content type; 413 past ``max_bytes`` of file data, past
    ``max_bytes`` + envelope of body (counted as it streams, so a chunked body without
    Content-Length is cut off too; also early, from Content-Length), for a field longer
    than ``max_field_bytes`` or oversized part headers; 422 for more than
    ``max_fields`` fields, too many parts or a malformed body. On error nothing is left.
    """
    ctype, options = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data":
        raise UnsupportedMediaTypeError(
            f"expected multipart/form-data, got {ctype.decode('latin-1') or 'no content type'}"
        )
    boundary = options.get(b"boundary")
    if not boundary:
        raise RequestValidationProblem("multipart/form-data without a boundary")
    body_limit = max_bytes + _ENVELOPE_BYTES + max_fields * max_field_bytes
    declared = request.headers.get("content-length")
    if declared is not None and content_length_over(declared, body_limit):
        raise PayloadTooLargeError(f"upload exceeds the limit of {max_bytes} bytes")

    spool_root.mkdir(parents=True, exist_ok=True)
    upload = SpooledUpload(Path(tempfile.mkdtemp(prefix="upload-", dir=spool_root)))
    collector = _PartCollector(
        upload, max_bytes, max_files, max_fields=max_fields, max_field_bytes=max_field_bytes
    )
    callbacks: Any = {
        "on_part_begin": collector.on_part_begin,
        "on_part_data": collector.on_part_data,
        "on_part_end": collector.on_part_end,
        "on_header_field": collector.on_header_field,
        "on_header_value": collector.on_header_value,
        "on_header_end": collector.on_header_end,
        "on_headers_finished": collector.on_headers_finished,
    }
    parser = MultipartParser(boundary, callbacks, max_header_size=_MAX_HEADER_BYTES)
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > body_limit:
                raise PayloadTooLargeError(f"request body exceeds {body_limit} bytes")
            parser.write(chunk)
        parser.finalize()
    except Exception as exc:
        collector.close()
        upload.cleanup()
        raise _refusal(exc) from None
    collector.close()
    return upload
