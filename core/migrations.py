"""Database migrations: Alembic's config for this checkout or image, and `upgrade_database`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.settings import Settings, get_settings


def alembic_config(settings: Settings) -> Any:
    """The Alembic config of this checkout / image, pointed at the settings' database."""
    from alembic.config import Config

    roots = [Path.cwd(), Path(__file__).resolve().parent.parent]
    for root in roots:
        ini = root / "alembic.ini"
        if ini.is_file() and (root / "migrations").is_dir():
            cfg = Config(str(ini))
            cfg.set_main_option("script_location", str(root / "migrations"))
            break
    else:
        raise FileNotFoundError(
            "alembic.ini and migrations/ not found next to the core package or in the "
            "current directory"
        )
    # '%' is Alembic's interpolation character; URLs may contain escaped passwords.
    cfg.set_main_option("sqlalchemy.url", settings.db_url.replace("%", "%%"))
    cfg.attributes["configure_logger"] = False
    return cfg


def upgrade_database(settings: Settings | None = None) -> None:
    """``alembic upgrade head`` on the settings' database (a no-op when already there)."""
    from alembic import command

    settings = settings or get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(settings), "head")


__all__ = ["alembic_config", "upgrade_database"]
