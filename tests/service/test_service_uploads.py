"""Model and dataset uploads: inspection, sha256, size limit, media types, bad files."""

from __future__ import annotations

import hashlib
import io
import pickle
from collections.abc import Iterator
from pathlib import Path

import torch
from fastapi.testclient import TestClient
from service_builders import efficient_kan_bytes, native_model_bytes, npz_bytes, pykan_files
from service_helpers import assert_problem
from sqlalchemy import func, select

from core.db import DatasetRecord, ModelRecord, session_scope
from core.settings import Settings

OCTET = "application/octet-stream"


def _stored_files(settings: Settings) -> list[Path]:
    roots = [settings.storage_root, settings.scratch / "uploads"]
    return [p for root in roots if root.exists() for p in root.rglob("*") if p.is_file()]


def _count(settings: Settings, model: type[ModelRecord] | type[DatasetRecord]) -> int:
    with session_scope(settings) as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


class TestModelUpload:
    def test_efficient_kan_checkpoint(
        self, client: TestClient, auth: dict[str, str], settings: Settings
    ) -> None:
        data = efficient_kan_bytes([4, 5, 3])
        r = client.post("/v1/models", headers=auth, files={"file": ("m.pt", data, OCTET)})
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["id"].startswith("mdl_")
        assert (body["family"], body["format"]) == ("bspline", "efficient-kan")
        assert body["edges"] == 4 * 5 + 5 * 3
        assert body["bytes"] == len(data)
        assert body["sha256"] == hashlib.sha256(data).hexdigest()
        assert [layer["in"] for layer in body["layers"]] == [4, 5]
        # what is stored is byte-identical, and GET answers the same record
        with session_scope(settings) as s:
            row = s.get(ModelRecord, body["id"])
            assert row is not None
            assert settings.storage_root.joinpath(row.storage_key).read_bytes() == data
        got = client.get(f"/v1/models/{body['id']}", headers=auth)
        assert got.status_code == 200 and got.json() == body
        assert not list((settings.scratch / "uploads").iterdir())

    def test_native_format(self, client: TestClient, auth: dict[str, str], tmp_path: Path) -> None:
        data = native_model_bytes(tmp_path, [3, 4, 2])
        r = client.post("/v1/models", headers=auth, files={"file": ("m.safetensors", data, OCTET)})
        assert r.status_code == 201, r.text
        assert r.json()["format"] == "metacluster" and r.json()["edges"] == 3 * 4 + 4 * 2

    def test_pykan_two_files(
        self, client: TestClient, auth: dict[str, str], tmp_path: Path, settings: Settings
    ) -> None:
        config, state = pykan_files(tmp_path, [2, 3, 1])
        files = [
            ("file", (config.name, config.read_bytes(), "application/x-yaml")),
            ("file", (state.name, state.read_bytes(), OCTET)),
        ]
        r = client.post("/v1/models", headers=auth, files=files)
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["format"] == "pykan" and body["edges"] == 2 * 3 + 3 * 1
        assert body["bytes"] == config.stat().st_size + state.stat().st_size
        # the same pair named by fields `config` + `state` is the same checkpoint
        named = client.post(
            "/v1/models",
            headers=auth,
            files=[
                ("config", (config.name, config.read_bytes(), "application/x-yaml")),
                ("state", (state.name, state.read_bytes(), OCTET)),
            ],
        )
        assert named.status_code == 201, named.text
        assert named.json()["sha256"] == body["sha256"] and named.json()["id"] != body["id"]
        with session_scope(settings) as s:
            row = s.get(ModelRecord, body["id"])
            assert row is not None and row.storage_key.endswith("m_state")
            assert (
                settings.storage_root.joinpath(row.storage_key).with_name("m_config.yml").is_file()
            )

    def test_too_large_is_413_and_leaves_nothing(
        self, client: TestClient, auth: dict[str, str], settings: Settings
    ) -> None:
        data = b"\0" * (settings.max_upload_bytes + 1)
        r = client.post("/v1/models", headers=auth, files={"file": ("big.pt", data, OCTET)})
        assert_problem(r, 413, "payload_too_large")
        assert _stored_files(settings) == []
        assert self._owner_models(settings, auth) == 0

    def test_too_large_streamed_without_length_is_cut_off(
        self, client: TestClient, auth: dict[str, str], settings: Settings
    ) -> None:
        # Chunked body: no Content-Length, so the limit must hold while streaming.
        boundary = "XbOuNdArY"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.pt"\r\n'
            f"Content-Type: {OCTET}\r\n\r\n"
        ).encode()
        sent = {"bytes": 0}

        def body() -> Iterator[bytes]:
            yield head
            for _ in range(settings.max_upload_bytes // 65536 + 4):
                sent["bytes"] += 65536
                yield b"\1" * 65536
            yield f"\r\n--{boundary}--\r\n".encode()

        r = client.post(
            "/v1/models",
            headers={**auth, "Content-Type": f"multipart/form-data; boundary={boundary}"},
            content=body(),
        )
        assert_problem(r, 413, "payload_too_large")
        assert _stored_files(settings) == []

    def test_json_body_is_415(self, client: TestClient, auth: dict[str, str]) -> None:
        r = client.post("/v1/models", headers=auth, json={"weights": [1, 2]})
        assert_problem(r, 415, "unsupported_media_type")

    def test_image_part_is_415(
        self, client: TestClient, auth: dict[str, str], settings: Settings
    ) -> None:
        r = client.post(
            "/v1/models", headers=auth, files={"file": ("m.png", b"\x89PNG....", "image/png")}
        )
        assert_problem(r, 415, "unsupported_media_type")
        assert _stored_files(settings) == []

    def test_not_a_kan_is_422(
        self, client: TestClient, auth: dict[str, str], settings: Settings
    ) -> None:
        buf = io.BytesIO()
        torch.save(torch.nn.Linear(3, 2).state_dict(), buf)  # a real checkpoint, not a KAN
        r = client.post("/v1/models", headers=auth, files={"file": ("m.pt", buf.getvalue(), OCTET)})
        assert_problem(r, 422, "unsupported_format")
        # bytes that are no pickle at all are not "unsafe", just not a checkpoint
        r = client.post("/v1/models", headers=auth, files={"file": ("m.pt", b"not torch", OCTET)})
        assert_problem(r, 422, "unsupported_format")
        assert _stored_files(settings) == []
        assert self._owner_models(settings, auth) == 0

    def test_pickled_module_is_refused_unexecuted(
        self, client: TestClient, auth: dict[str, str], tmp_path: Path, settings: Settings
    ) -> None:
        buf = io.BytesIO()
        torch.save(torch.nn.Linear(2, 2), buf)
        r = client.post("/v1/models", headers=auth, files={"file": ("m.pt", buf.getvalue(), OCTET)})
        assert_problem(r, 422, "unsafe_checkpoint")

        marker = tmp_path / "pwned"

        class Evil:
            def __reduce__(self):  # type: ignore[no-untyped-def]
                return (open, (str(marker), "w"))

        evil = io.BytesIO()
        torch.save({"layers.0.grid": Evil()}, evil, pickle_protocol=pickle.HIGHEST_PROTOCOL)
        r = client.post(
            "/v1/models", headers=auth, files={"file": ("e.pt", evil.getvalue(), OCTET)}
        )
        assert_problem(r, 422, "unsafe_checkpoint")
        assert not marker.exists()
        assert _stored_files(settings) == []

    def test_two_weight_files_are_ambiguous(self, client: TestClient, auth: dict[str, str]) -> None:
        data = efficient_kan_bytes([2, 2])
        files = [("file", ("a.pt", data, OCTET)), ("file", ("b.pt", data, OCTET))]
        r = client.post("/v1/models", headers=auth, files=files)
        assert "a.pt" in assert_problem(r, 422, "validation_error")["detail"]

    def test_explicit_format_is_honoured(self, client: TestClient, auth: dict[str, str]) -> None:
        data = efficient_kan_bytes([2, 3, 2])
        ok = client.post(
            "/v1/models",
            headers=auth,
            data={"format": "efficient-kan"},
            files={"file": ("m.pt", data, OCTET)},
        )
        assert ok.status_code == 201 and ok.json()["format"] == "efficient-kan"
        wrong = client.post(
            "/v1/models",
            headers=auth,
            data={"format": "pykan"},
            files={"file": ("m.pt", data, OCTET)},
        )
        assert wrong.status_code == 422 and wrong.json()["code"] == "unsupported_format"

    def test_missing_file_field_is_422(self, client: TestClient, auth: dict[str, str]) -> None:
        r = client.post(
            "/v1/models", headers=auth, data={"format": "auto"}, files={"x": ("a", b"1")}
        )
        assert_problem(r, 422, "validation_error")

    @staticmethod
    def _owner_models(settings: Settings, auth: dict[str, str]) -> int:
        from core.db import ApiKey
        from service.auth import hash_key

        token = auth["Authorization"].split(" ", 1)[1]
        with session_scope(settings) as s:
            owner = s.scalars(select(ApiKey).where(ApiKey.key_hash == hash_key(token))).one()
            return int(
                s.scalar(
                    select(func.count())
                    .select_from(ModelRecord)
                    .where(ModelRecord.owner_id == owner.id)
                )
                or 0
            )


class TestDatasetUpload:
    def test_classification_npz(
        self, client: TestClient, auth: dict[str, str], settings: Settings
    ) -> None:
        data = npz_bytes(n_features=4, n_classes=3, n_train=30, n_test=12)
        r = client.post("/v1/datasets", headers=auth, files={"file": ("d.npz", data, OCTET)})
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["id"].startswith("ds_")
        assert (body["task"], body["n_train"], body["n_test"]) == ("classification", 30, 12)
        assert (body["input_shape"], body["n_classes"], body["n_outputs"]) == ([4], 3, 3)
        assert body["sha256"] == hashlib.sha256(data).hexdigest()
        assert settings.storage_root.joinpath(f"datasets/{body['id']}.npz").read_bytes() == data
        assert client.get(f"/v1/datasets/{body['id']}", headers=auth).json() == body

    def test_regression_npz(self, client: TestClient, auth: dict[str, str]) -> None:
        data = npz_bytes(n_features=2, n_classes=None)
        r = client.post("/v1/datasets", headers=auth, files={"file": ("r.npz", data, OCTET)})
        assert r.status_code == 201, r.text
        assert (r.json()["task"], r.json()["n_classes"], r.json()["n_outputs"]) == (
            "regression",
            None,
            1,
        )

    def test_missing_array_is_422(
        self, client: TestClient, auth: dict[str, str], settings: Settings
    ) -> None:
        data = npz_bytes(y_test=None)
        r = client.post("/v1/datasets", headers=auth, files={"file": ("d.npz", data, OCTET)})
        body = assert_problem(r, 422, "invalid_dataset")
        assert "y_test" in body["detail"]
        assert _stored_files(settings) == []

    def test_csv_is_415(self, client: TestClient, auth: dict[str, str]) -> None:
        r = client.post(
            "/v1/datasets", headers=auth, files={"file": ("d.csv", b"1,2\n", "text/csv")}
        )
        assert_problem(r, 415, "unsupported_media_type")

    def test_too_large_is_413(
        self, client: TestClient, auth: dict[str, str], settings: Settings
    ) -> None:
        data = npz_bytes(n_train=settings.max_upload_bytes // 16 + 1)
        assert len(data) > settings.max_upload_bytes
        r = client.post("/v1/datasets", headers=auth, files={"file": ("d.npz", data, OCTET)})
        assert_problem(r, 413, "payload_too_large")
        assert _stored_files(settings) == []
