"""Seed a real MLflow server through the MLflow client (MLFLOW_TRACKING_URI): models with
versions, a gap left by a deleted version, aliases, tags, descriptions and files of a few
MiB.  Argument: ``first`` (the initial registry) or ``more`` (what changes before a rerun:
an alias moves, a version and a big model are added).  Prints JSON."""

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import mlflow
from mlflow import MlflowClient

client = MlflowClient()
stage = sys.argv[1]


def payload(seed: str, size: int) -> bytes:
    block = hashlib.sha256(seed.encode()).digest() * 32
    return (block * (size // len(block) + 1))[:size]


def logged_files(files: dict) -> str:
    """A run whose artifacts under ``files/`` are ``files``; its runs:/ URI."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in files.items():
            path = Path(tmp) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        mlflow.set_experiment("seed")
        with mlflow.start_run() as run:
            mlflow.log_artifacts(tmp, artifact_path="files")
    return f"runs:/{run.info.run_id}/files"


def version(name: str, files: dict, description: str = "", tags: dict | None = None) -> str:
    source = logged_files(files)
    made = client.create_model_version(name, source=source, description=description,
                                       tags=tags or {}, run_id=source.split("/")[1])
    return made.version


if stage == "first":
    client.create_registered_model("imp-a", tags={"team": "risk"}, description="model a")
    version("imp-a", {"model.bin": payload("a1", 3 * 1024 * 1024), "conf/c.json": b"{}"},
            "first", {"quality": "ok"})
    version("imp-a", {"model.bin": payload("a2", 1024)}, "second")
    version("imp-a", {"model.bin": payload("a3", 2 * 1024 * 1024 + 5)}, "third",
            {"quality": "best"})
    client.delete_model_version("imp-a", "2")
    client.set_registered_model_alias("imp-a", "prod", "3")
    client.set_registered_model_alias("imp-a", "old", "1")
    client.create_registered_model("imp-b", description="model b")
    version("imp-b", {"weights.bin": payload("b1", 3 * 1024 * 1024)})
    client.create_registered_model("odd name", description="a name modelreg refuses")
    client.create_registered_model("other-c")
    version("other-c", {"x.bin": b"x"})
else:
    client.set_registered_model_alias("imp-a", "prod", "1")
    version("imp-a", {"model.bin": payload("a4", 4096)}, "fourth")
    client.create_registered_model("imp-big")
    version("imp-big", {"big.bin": payload("big", 24 * 1024 * 1024)})
print(json.dumps({"ok": True}))
