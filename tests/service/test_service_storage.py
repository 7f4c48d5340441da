"""LocalStorage: atomic writes with sha256, the size limit, key validation, deletes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from metacluster.errors import InputError
from service.errors import NotFoundError, PayloadTooLargeError
from service.storage import LocalStorage


def test_save_stream_hashes_and_reads_back(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path / "s")
    chunks = [b"abc", b"", b"defg" * 1000]
    size, sha = store.save_stream("models/m1/a.pt", chunks)
    data = b"".join(chunks)
    assert (size, sha) == (len(data), hashlib.sha256(data).hexdigest())
    assert store.exists("models/m1/a.pt") and store.path("models/m1/a.pt").read_bytes() == data
    with store.open("models/m1/a.pt") as fh:
        assert fh.read() == data


def test_over_limit_leaves_nothing_and_keeps_old_file(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path / "s")
    store.save_stream("k/x", [b"old"])
    with pytest.raises(PayloadTooLargeError):
        store.save_stream("k/x", [b"12345", b"67890"], max_bytes=8)
    assert store.path("k/x").read_bytes() == b"old"  # atomic: the old version survives
    assert sorted(p.name for p in (tmp_path / "s" / "k").iterdir()) == ["x"]


def test_save_file_copies(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"\x01" * 3000)
    store = LocalStorage(tmp_path / "s")
    assert store.save_file("datasets/d.npz", src) == (
        3000,
        hashlib.sha256(src.read_bytes()).hexdigest(),
    )


@pytest.mark.parametrize("key", ["", "/etc/passwd", "../x", "a/../../x", "a//b", "a/./b", "a\\b"])
def test_keys_cannot_escape_the_root(tmp_path: Path, key: str) -> None:
    store = LocalStorage(tmp_path / "s")
    with pytest.raises(InputError):
        store.save_stream(key, [b"x"])


def test_delete_and_delete_prefix(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path / "s")
    for name in ("a", "b"):
        store.save_stream(f"jobs/j1/artifacts/{name}", [b"1"])
    store.save_stream("jobs/j2/artifacts/a", [b"2"])
    store.delete("jobs/j1/artifacts/a")
    store.delete("jobs/j1/artifacts/missing")  # no error
    assert not store.exists("jobs/j1/artifacts/a") and store.exists("jobs/j1/artifacts/b")
    store.delete_prefix("jobs/j1/")
    assert not store.exists("jobs/j1") and store.exists("jobs/j2/artifacts/a")
    with pytest.raises(NotFoundError):
        store.open("jobs/j1/artifacts/b")
