"""Storage as blobs: the local backend behind the `Storage` interface.

put (atomic, hashed, size-limited), open, stat, list, delete, local_copy, url, key
validation, and the backend registry chosen by the storage URL's scheme.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from core.service_errors import NotFoundError, PayloadTooLargeError
from core.settings import Settings
from core.storage import LocalStorage, Storage, get_storage, register_backend
from metacluster.errors import InputError


def test_put_every_kind_of_source_hashes_and_reads_back(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path / "s")
    data = b"abc" + b"defg" * 1000
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    for i, source in enumerate(([b"abc", b"", b"defg" * 1000], data, src, io.BytesIO(data))):
        blob = store.put(f"models/m{i}/a.pt", source)  # type: ignore[arg-type]
        assert (blob.bytes, blob.sha256) == (len(data), hashlib.sha256(data).hexdigest())
        with store.open(f"models/m{i}/a.pt") as fh:
            assert fh.read() == data
        stat = store.stat(f"models/m{i}/a.pt")
        assert stat is not None and stat.bytes == len(data)
    assert store.stat("models/none/a.pt") is None


def test_over_limit_leaves_nothing_and_keeps_old_blob(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path / "s")
    store.put("k/x", b"old")
    with pytest.raises(PayloadTooLargeError):
        store.put("k/x", [b"12345", b"67890"], max_bytes=8)
    with store.open("k/x") as fh:
        assert fh.read() == b"old"  # atomic: the old version survives
    assert store.list("k/") == ["k/x"]  # no temp file left behind


@pytest.mark.parametrize("key", ["", "/etc/passwd", "../x", "a/../../x", "a//b", "a/./b", "a\\b"])
def test_keys_cannot_escape_the_root(tmp_path: Path, key: str) -> None:
    store = LocalStorage(tmp_path / "s")
    with pytest.raises(InputError):
        store.put(key, b"x")


def test_list_delete_and_delete_prefix_leave_no_empty_folders(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path / "s")
    for name in ("a", "b"):
        store.put(f"jobs/j1/artifacts/{name}", b"1")
    store.put("jobs/j1/checkpoints/meta.json", b"{}")
    store.put("jobs/j2/artifacts/a", b"2")
    assert store.list("jobs/j1/") == [
        "jobs/j1/artifacts/a",
        "jobs/j1/artifacts/b",
        "jobs/j1/checkpoints/meta.json",
    ]
    store.delete("jobs/j1/artifacts/a")
    store.delete("jobs/j1/artifacts/missing")  # no error
    assert store.list("jobs/j1/artifacts") == ["jobs/j1/artifacts/b"]
    store.delete_prefix("jobs/j1/checkpoints")
    assert not (tmp_path / "s" / "jobs" / "j1" / "checkpoints").exists()
    store.delete_prefix("jobs/j1/")
    assert store.list("jobs/j1/") == [] and not (tmp_path / "s" / "jobs" / "j1").exists()
    assert store.list("jobs/j2/") == ["jobs/j2/artifacts/a"]
    with pytest.raises(NotFoundError):
        store.open("jobs/j1/artifacts/b")


def test_local_copy_is_a_scratch_file_that_goes_away(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path / "s")
    store.put("models/m1/m_state", b"state")
    store.put("models/m1/m_config.yml", b"cfg")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with store.local_copy("models/m1/m_state", scratch) as a:
        with store.local_copy("models/m1/m_config.yml", scratch) as b:
            assert a.parent == b.parent == scratch  # a pykan pair lands side by side
            assert (a.name, a.read_bytes(), b.read_bytes()) == ("m_state", b"state", b"cfg")
        assert not b.exists()
    assert not a.exists()
    with store.local_copy("models/m1/m_state") as c:  # in a fresh folder of its own
        folder = c.parent
        assert c.read_bytes() == b"state"
    assert not folder.exists()
    with store.open("models/m1/m_state") as fh:  # the blob itself is untouched
        assert fh.read() == b"state"
    with pytest.raises(NotFoundError), store.local_copy("models/m1/none"):
        pass


def test_local_backend_cannot_sign_urls(tmp_path: Path) -> None:
    assert LocalStorage(tmp_path / "s").url("models/m1/a.pt") is None


def test_backend_is_chosen_by_the_storage_url_scheme(tmp_path: Path) -> None:
    local = get_storage(Settings(data_dir=tmp_path))
    assert isinstance(local, LocalStorage) and local.root == (tmp_path / "storage").resolve()
    explicit = get_storage(Settings(data_dir=tmp_path, storage_url=f"file://{tmp_path}/blobs"))
    assert isinstance(explicit, LocalStorage) and explicit.root == (tmp_path / "blobs").resolve()
    with pytest.raises(InputError, match="unsupported storage URL scheme 'memo'"):
        get_storage(Settings(data_dir=tmp_path, storage_url="memo://x"))
    made: list[Settings] = []

    def factory(settings: Settings) -> Storage:
        made.append(settings)
        return LocalStorage(tmp_path / "memo")

    register_backend("memo", factory)
    try:
        assert isinstance(
            get_storage(Settings(data_dir=tmp_path, storage_url="memo://x")), LocalStorage
        )
        assert made and made[0].storage_url == "memo://x"
    finally:
        from core.storage import _BACKENDS

        _BACKENDS.pop("memo")
