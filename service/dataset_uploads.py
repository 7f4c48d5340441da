"""Dataset uploads (``.npz`` only), validated by `metacluster.data`'s own reader.

The stored file is exactly what the worker will load, so a dataset that passes here loads there.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy.orm import Session

from core import retention
from core.db.models import ApiKey, DatasetRecord, new_id
from core.db.transaction import after_commit, after_rollback
from core.repositories import DatasetRepository
from core.service_errors import RequestValidationProblem, UnsupportedMediaTypeError
from core.storage import Storage, dataset_key
from metacluster.data import DatasetMeta
from metacluster.errors import DatasetError, MetaClusterError
from service.multipart import SpooledFile, SpooledUpload

log = logging.getLogger(__name__)

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # an .npz is a zip archive


def check_dataset_upload(upload: SpooledUpload) -> SpooledFile:
    """The one ``.npz`` file of a dataset upload, judged by its content (a zip archive),
    not by the part's content type, which clients guess from their own mime tables
    (415 for anything else)."""
    if len(upload.files) != 1 or upload.files[0].field != "file":
        raise RequestValidationProblem("send exactly one .npz file as form field 'file'")
    f = upload.files[0]
    with open(f.path, "rb") as fh:
        head = fh.read(4)
    if head not in ZIP_MAGIC:
        raise UnsupportedMediaTypeError(
            f"{f.original_filename or f.filename} is not an .npz file (a zip archive of "
            "x_train, y_train, x_test, y_test)"
        )
    return f


def read_npz_meta(f: SpooledFile, max_bytes: int) -> DatasetMeta:
    """Summarise the ``.npz`` in bounded memory (`metacluster.data.files.npz_meta`):
    the arrays' uncompressed size is checked from their headers before anything is
    read, and their values are streamed; the API never holds a whole data set."""
    from metacluster.data.files import npz_meta

    try:
        return npz_meta(f.path, max_bytes=max_bytes)
    except MetaClusterError:
        raise
    except Exception as exc:
        log.warning("npz_meta failed on %s: %r", f.filename, exc)
        raise DatasetError(f"{f.filename}: not a valid .npz dataset ({exc})") from None


def create_dataset(
    session: Session, storage: Storage, owner: ApiKey, f: SpooledFile, meta: DatasetMeta
) -> DatasetRecord:
    """Store the file as ``datasets/{id}.npz`` and add the row (not committed)."""
    dataset_id = new_id("ds")
    key = dataset_key(dataset_id)
    after_rollback(session, lambda: storage.delete(key))
    blob = storage.put(key, f.path)
    size, sha = blob.bytes, str(blob.sha256)
    record = DatasetRecord(
        id=dataset_id,
        owner_id=owner.id,
        filename=f.original_filename or f.filename,
        task=meta.task,
        n_train=meta.n_train,
        n_test=meta.n_test,
        input_shape=list(meta.input_shape),
        n_classes=meta.n_classes,
        n_outputs=meta.n_outputs,
        sha256=sha,
        bytes=size,
        storage_key=key,
    )
    return DatasetRepository(session).add(record)


def get_dataset(session: Session, owner: ApiKey, dataset_id: str) -> DatasetRecord:
    return DatasetRepository(session).require(owner.id, dataset_id)


def list_datasets(
    session: Session, owner: ApiKey, *, after: str | None, limit: int
) -> tuple[Sequence[DatasetRecord], str | None]:
    """A page of the owner's datasets, newest first, and the cursor of the next page."""
    return DatasetRepository(session).page(owner.id, after=after, limit=limit)


def delete_dataset(session: Session, storage: Storage, owner: ApiKey, dataset_id: str) -> None:
    """The dataset and its file (409 while a queued or running job uses it)."""
    record = DatasetRepository(session).require(owner.id, dataset_id, for_update=True)
    keys = retention.delete_dataset(session, record)
    after_commit(session, lambda: retention.remove_blobs(storage, keys))
