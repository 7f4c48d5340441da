"""The OpenAPI document changes only by additions (issue 17: per-method configs).

`fixtures/openapi_v1.json` is the document as it was before the per-method config
schemas were added. Every path, operation, schema and property in it must still be
in the current document with the same type: the same keys, the same values (texts,
titles and the package version aside), lists of the same length. New paths, schemas,
properties and keywords may be added.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from metacluster.compress.pipeline.registry import method_names

FIXTURE = Path(__file__).parent / "fixtures" / "openapi_v1.json"
# Prose may be reworded; the version follows the package.
FREE = frozenset({"description", "title", "summary", "version"})


def removals(old: Any, new: Any, where: str = "") -> list[str]:
    """Where `new` drops or changes what `old` had (empty: only additions)."""
    if isinstance(old, dict):
        if not isinstance(new, dict):
            return [f"{where}: was an object"]
        out: list[str] = []
        for key, value in old.items():
            if key not in new:
                out.append(f"{where}/{key}: removed")
            elif key not in FREE:
                out += removals(value, new[key], f"{where}/{key}")
        return out
    if isinstance(old, list):
        if not isinstance(new, list) or len(old) != len(new):
            return [f"{where}: list changed"]
        return [
            p
            for i, (a, b) in enumerate(zip(old, new, strict=True))
            for p in removals(a, b, f"{where}/{i}")
        ]
    return [] if old == new else [f"{where}: {old!r} -> {new!r}"]


def test_the_document_changes_only_by_additions(client: TestClient) -> None:
    old = json.loads(FIXTURE.read_text())
    new = client.get("/openapi.json").json()
    assert removals(old, new) == []
    # and the additions are the per-method configs
    schemas = new["components"]["schemas"]
    added = sorted(set(schemas) - set(old["components"]["schemas"]))
    assert "DkmConfig" in added and "PqConfig" in added, added
    assert all(name.endswith("Config") for name in added), added


def test_the_comparison_bites() -> None:
    old = {"a": {"type": "object", "properties": {"k": {"type": "integer"}}}, "l": [1, 2]}
    assert removals(old, {**old, "b": 1}) == []
    assert removals(old, {**old, "a": {"type": "object", "properties": {}}}) == [
        "/a/properties/k: removed"
    ]
    changed = {"type": "object", "properties": {"k": {"type": "string"}}}
    assert removals(old, {**old, "a": changed}) == ["/a/properties/k/type: 'integer' -> 'string'"]
    assert removals(old, {**old, "l": [1]}) == ["/l: list changed"]


def test_each_method_config_documents_its_own_knobs(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    config = schemas["JobCreate"]["properties"]["config"]
    assert config["type"] == "object" and config["x-default-method"] == "dkm"
    assert config["x-method-configs"]["pq"] == "#/components/schemas/PqConfig"
    assert set(config["x-method-configs"]) == set(method_names())
    assert {"dkm", "metacluster", "kmeans", "gainshape", "scalar", "pq", "int8", "int4"} <= set(
        config["x-method-configs"]
    )
    for ref in config["x-method-configs"].values():
        assert ref.removeprefix("#/components/schemas/") in schemas
    pq, meta, dkm = schemas["PqConfig"], schemas["MetaclusterConfig"], schemas["DkmConfig"]
    assert pq["properties"]["method"]["const"] == "pq"
    assert set(pq["properties"]["method_options"]["properties"]) == {"m", "bits"}
    gainshape = schemas["GainshapeConfig"]["properties"]["method_options"]["properties"]
    assert "gain_k" in gainshape
    # the meta-learner's knobs only where a method reads them
    assert "d_emb" in meta["properties"] and "d_emb" not in dkm["properties"]
    assert "soft_epochs" in dkm["properties"] and "soft_epochs" not in pq["properties"]
    assert "k" in pq["properties"] and "seed" in dkm["properties"]
    assert (
        meta["properties"]["d_emb"]["minimum"] == 1 and meta["properties"]["d_emb"]["maximum"] == 4
    )
