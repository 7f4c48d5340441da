"""Settings: env prefix, defaults derived from the data dir, production guard, queue choice."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from core.settings import Settings, get_settings


def test_defaults_follow_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("METACLUSTER_DATA_DIR", str(tmp_path))
    for var in ("DATABASE_URL", "BROKER_URL", "STORAGE_DIR"):
        monkeypatch.delenv(f"METACLUSTER_{var}", raising=False)
    get_settings.cache_clear()
    try:
        s = get_settings()
        assert s.db_url == f"sqlite:///{tmp_path}/metacluster.db"
        assert s.broker == f"sqla+sqlite:///{tmp_path}/broker.db"
        assert s.storage_root == tmp_path / "storage"
        assert s.max_upload_bytes == 256 * 1024 * 1024 and s.max_deliveries == 3
        assert get_settings() is s  # cached
        monkeypatch.setenv("METACLUSTER_MAX_UPLOAD_BYTES", "1000")
        get_settings.cache_clear()
        assert get_settings().max_upload_bytes == 1000
    finally:
        get_settings.cache_clear()


def test_production_refuses_sqlite(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="SQLite"):
        Settings(env="production", data_dir=tmp_path)
    ok = Settings(env="production", database_url="postgresql+psycopg://u@h/db")
    assert ok.env == "production"


def test_queue_for_device() -> None:
    s = Settings(default_queue="cpu")
    assert [s.queue_for(d) for d in ("cuda", "cuda:1", "cpu", "auto", None)] == [
        "gpu",
        "gpu",
        "cpu",
        "cpu",
        "cpu",
    ]
    assert Settings(default_queue="gpu").queue_for("auto") == "gpu"


def test_invalid_values_are_refused() -> None:
    with pytest.raises(ValidationError):
        Settings(max_upload_bytes=0)
    with pytest.raises(ValidationError):
        Settings(env="staging")  # type: ignore[arg-type]


def test_the_data_dir_is_found_the_same_way_everywhere(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from core.settings import discover_data_dir, remember_data_dir

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    checkout = tmp_path / "checkout"
    (checkout / "sub" / "deeper").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # nothing anywhere: ./data of the current folder
    assert discover_data_dir(elsewhere) == elsewhere.resolve() / "data"
    # a data/ with a database in a parent folder wins
    (checkout / "data").mkdir()
    (checkout / "data" / "metacluster.db").write_bytes(b"")
    assert discover_data_dir(checkout / "sub" / "deeper") == checkout.resolve() / "data"
    # from elsewhere: the data directory the last `serve` recorded
    remember_data_dir(checkout / "data")
    assert discover_data_dir(elsewhere) == checkout.resolve() / "data"
    # a recorded directory whose database is gone is ignored
    (checkout / "data" / "metacluster.db").unlink()
    assert discover_data_dir(elsewhere) == elsewhere.resolve() / "data"
    # and METACLUSTER_DATA_DIR always wins
    monkeypatch.setenv("METACLUSTER_DATA_DIR", str(tmp_path / "explicit"))
    assert Settings().data_dir == tmp_path / "explicit"
