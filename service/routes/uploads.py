"""``POST /v1/models`` and ``POST /v1/datasets``: streamed multipart uploads.

The body is spooled to disk with the size limit, inspected in a worker thread, then stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from core.db.models import ApiKey, DatasetRecord, ModelRecord
from core.settings import Settings
from core.storage import Storage
from service import dataset_uploads as dataset_service
from service import model_uploads as model_service
from service.deps import CurrentKey, SessionDep, SettingsDep, StorageDep
from service.multipart import SpooledUpload, spool_multipart
from service.problems import problem_responses
from service.routes import PageDep, delete_route, list_route, read_route
from service.schemas import DatasetOut, DatasetPage, ModelOut, ModelPage

router = APIRouter(prefix="/v1", tags=["uploads"])
# The routes whose multipart bodies are spooled to disk within their own limits
# (MAX_UPLOAD_BYTES), not under the JSON body limit (`service.limits`).
STREAMED = frozenset({("POST", "/v1/models"), ("POST", "/v1/datasets")})

_UPLOAD_ERRORS = problem_responses(401, 413, 415, 422)


def _multipart_body(description: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    props: dict[str, Any] = {
        "file": {
            "type": "array",
            "items": {"type": "string", "format": "binary"},
            "description": description,
        }
    }
    props.update(extra or {})
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {"type": "object", "properties": props, "required": ["file"]}
                }
            },
        }
    }


def model_out(record: ModelRecord) -> ModelOut:
    return ModelOut.model_validate(record, from_attributes=True)


def dataset_out(record: DatasetRecord) -> DatasetOut:
    return DatasetOut.model_validate(record, from_attributes=True)


@dataclass(frozen=True)
class _Upload:
    """What an upload route needs: the caller's key is checked before the body is read."""

    request: Request
    session: Session
    owner: ApiKey
    settings: Settings
    storage: Storage

    async def spool(self, *, max_files: int) -> SpooledUpload:
        """The multipart body spooled to scratch files, within the upload limits."""
        return await spool_multipart(
            self.request,
            self.settings.scratch / "uploads",
            max_bytes=self.settings.max_upload_bytes,
            max_files=max_files,
            max_fields=self.settings.max_form_fields,
            max_field_bytes=self.settings.max_form_field_bytes,
        )


async def _upload_context(
    request: Request,
    session: SessionDep,
    owner: CurrentKey,
    settings: SettingsDep,
    storage: StorageDep,
) -> _Upload:
    return _Upload(request, session, owner, settings, storage)


UploadContext = Annotated[_Upload, Depends(_upload_context)]


@router.post(
    "/models",
    status_code=201,
    response_model=ModelOut,
    responses=_UPLOAD_ERRORS,
    summary="Upload a KAN checkpoint",
    openapi_extra=_multipart_body(
        "The checkpoint. One file for every format except pykan, which needs both "
        "`<prefix>_config.yml` and `<prefix>_state` (repeat `file`, or use fields "
        "`config` + `state`); a `<ckpt>.spec.json` may ride along (field `spec`).",
        {"format": {"type": "string", "default": "auto", "description": "Checkpoint format"}},
    ),
)
async def upload_model(ctx: UploadContext) -> ModelOut:
    with await ctx.spool(max_files=4) as upload:
        primary, fmt = model_service.check_model_upload(upload)
        processes = ctx.settings.inspect_processes
        info = await run_in_threadpool(model_service.inspect_upload, primary, fmt, processes)
        record = await run_in_threadpool(
            model_service.create_model, ctx.session, ctx.storage, ctx.owner, upload, primary, info
        )
    return model_out(record)


@read_route(router, "/models/{model_id}", ModelOut, "An uploaded model")
def get_model(model_id: str, session: SessionDep, owner: CurrentKey) -> ModelOut:
    return model_out(model_service.get_model(session, owner, model_id))


@list_route(router, "/models", ModelPage, "List uploaded models, newest first (cursor pagination)")
def list_models(session: SessionDep, owner: CurrentKey, page: PageDep) -> ModelPage:
    rows, nxt = model_service.list_models(session, owner, after=page.after, limit=page.limit)
    return ModelPage(items=[model_out(r) for r in rows], next=nxt)


@delete_route(
    router, "/models/{model_id}", "Delete a model, its files and the finished jobs made from it"
)
def delete_model(
    model_id: str, session: SessionDep, owner: CurrentKey, storage: StorageDep
) -> None:
    model_service.delete_model(session, storage, owner, model_id)


@router.post(
    "/datasets",
    status_code=201,
    response_model=DatasetOut,
    responses=_UPLOAD_ERRORS,
    summary="Upload an .npz dataset (x_train, y_train, x_test, y_test)",
    openapi_extra=_multipart_body("One .npz file"),
)
async def upload_dataset(ctx: UploadContext) -> DatasetOut:
    with await ctx.spool(max_files=1) as upload:
        f = dataset_service.check_dataset_upload(upload)
        limit = ctx.settings.max_dataset_bytes
        meta = await run_in_threadpool(dataset_service.read_npz_meta, f, limit)
        record = await run_in_threadpool(
            dataset_service.create_dataset, ctx.session, ctx.storage, ctx.owner, f, meta
        )
    return dataset_out(record)


@read_route(router, "/datasets/{dataset_id}", DatasetOut, "An uploaded dataset")
def get_dataset(dataset_id: str, session: SessionDep, owner: CurrentKey) -> DatasetOut:
    return dataset_out(dataset_service.get_dataset(session, owner, dataset_id))


@list_route(
    router, "/datasets", DatasetPage, "List uploaded datasets, newest first (cursor pagination)"
)
def list_datasets(session: SessionDep, owner: CurrentKey, page: PageDep) -> DatasetPage:
    rows, nxt = dataset_service.list_datasets(session, owner, after=page.after, limit=page.limit)
    return DatasetPage(items=[dataset_out(r) for r in rows], next=nxt)


@delete_route(router, "/datasets/{dataset_id}", "Delete a dataset and its file")
def delete_dataset(
    dataset_id: str, session: SessionDep, owner: CurrentKey, storage: StorageDep
) -> None:
    dataset_service.delete_dataset(session, storage, owner, dataset_id)
