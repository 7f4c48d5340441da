"""The config's types (issue 17, part 3): a shared run config, option groups read by
some methods only, one options type per method, one default, and the config below the
methods in the import graph."""

from __future__ import annotations

import ast
import dataclasses
import inspect
from pathlib import Path

import pytest

from metacluster.compress import MetaClusterConfig, get_method, method_names
from metacluster.compress.methods.baselines import PQOptions
from metacluster.compress.spec.config import (
    CodebookOptions,
    MetaLearnerOptions,
    RunConfig,
    SoftOptions,
    method_config_schema,
    method_config_types,
)
from metacluster.compress.spec.options import DEFAULT_METHOD, NoOptions, options_type
from metacluster.errors import ConfigError

GROUPS = (RunConfig, MetaLearnerOptions, SoftOptions, CodebookOptions)
OPTIONS = Path(inspect.getsourcefile(options_type) or "")  # where the default is stated
LIBRARY = Path(inspect.getsourcefile(ConfigError) or "").parent  # metacluster/


def _names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def test_the_groups_partition_the_flat_config() -> None:
    seen: set[str] = set()
    for group in GROUPS:
        assert not (_names(group) & seen), group.__name__
        seen |= _names(group)
    assert seen == _names(MetaClusterConfig)
    # the knobs the issue names as read by some methods only are not in the run config
    only_some = {"d_emb", "regress_steps", "meta_epochs", "soft_epochs", "baselines"}
    assert not (only_some & _names(RunConfig))


def test_each_method_has_its_config_type() -> None:
    types = method_config_types()
    assert set(types) == set(method_names())
    assert types["metacluster"] == (
        RunConfig,
        MetaLearnerOptions,
        SoftOptions,
        CodebookOptions,
        NoOptions,
    )
    assert types["dkm"] == (RunConfig, SoftOptions, CodebookOptions, NoOptions)
    assert types["kmeans"] == (RunConfig, CodebookOptions, NoOptions)
    assert types["pq"] == (RunConfig, PQOptions)
    for name, (run, *_groups, options) in types.items():
        assert run is RunConfig and options is get_method(name).options


def test_the_schema_of_a_method_lists_only_what_it_reads() -> None:
    meta, dkm, pq = (method_config_schema(n)["properties"] for n in ("metacluster", "dkm", "pq"))
    assert {"d_emb", "soft_epochs", "residual_k", "k", "seed"} <= set(meta)
    assert "d_emb" not in dkm and "soft_epochs" in dkm
    assert "soft_epochs" not in pq and "residual_k" not in pq
    assert set(pq["method_options"]["properties"]) == {"m", "bits"}
    assert pq["method"]["const"] == "pq"
    assert meta["k"]["anyOf"][0] == {"type": "integer", "minimum": 2, "maximum": 65536}
    assert meta["target_ratio"]["anyOf"][1] == {"type": "null"}


def test_the_method_options_are_parsed_once_into_their_type() -> None:
    cfg = MetaClusterConfig(method="pq", method_options={"m": 2})
    assert cfg.options == PQOptions(m=2, bits=4)
    assert MetaClusterConfig().options == NoOptions()
    assert cfg.group(RunConfig) == cfg.run and cfg.run.method == "pq"
    assert cfg.group(MetaLearnerOptions).d_emb == cfg.d_emb
    with pytest.raises(ConfigError, match="unknown method option"):
        MetaClusterConfig(method="pq", method_options={"q": 1})
    with pytest.raises(ConfigError, match="unknown compression method 'nope'"):
        options_type("nope")


def test_a_config_is_frozen_and_replace_validates_again() -> None:
    cfg = MetaClusterConfig(k=8)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.k = 4  # type: ignore[misc]
    assert cfg.replace(k=4).k == 4
    with pytest.raises(ConfigError, match="k must be"):
        cfg.replace(k=1)
    assert MetaClusterConfig.default_dict() == MetaClusterConfig().to_dict()


def test_one_default_method() -> None:
    assert MetaClusterConfig().method == DEFAULT_METHOD
    assert RunConfig().method == DEFAULT_METHOD
    assert method_names()[0] == DEFAULT_METHOD
    # No module of the library states the default again: the literal stands only in
    # options.py (the statement) and where the method registers under its name.
    found = set()
    for path in sorted(LIBRARY.rglob("*.py")):
        text = path.read_text()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Constant) and node.value == DEFAULT_METHOD:
                found.add(path)
    assert OPTIONS in found
    for path in found - {OPTIONS}:
        assert "register_method(" in path.read_text(), path


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_the_config_sits_below_the_methods() -> None:
    """config.py and options.py import nothing of the engine above them, not even
    under TYPE_CHECKING: the methods register their option types with options.py."""
    config_imports = _imports(Path(inspect.getsourcefile(MetaClusterConfig) or ""))
    options_imports = _imports(OPTIONS)
    project = {m for m in config_imports | options_imports if m.startswith("metacluster")}
    assert project == {options_type.__module__, "metacluster.errors", "metacluster.registry"}
