"""The model formats a drop may ship, how each is recognised by name, and which model is primary.

- `keras`: ``<name>.keras``, from Keras 3's ``model.save("model.keras")``;
- `hdf5`: ``<name>.h5`` or ``<name>.hdf5``, a whole model, from ``model.save("model.h5")`` (Keras 2 or 3);
- `keras2-json`: ``<name>_structure.json`` + ``<name>_weights.h5``, from Keras 2's / tf.keras 2's
  ``model.to_json()`` and ``model.save_weights()``;
- `saved-model`: a folder ``<name>/`` holding ``saved_model.pb``, from ``model.export(dir)`` or
  ``tf.saved_model.save``.

Recognition looks at names only (nothing is opened), so discovering a registry stays cheap; the
readers in `audit.model_readers` check the contents. A model is named by its file without the
extension (``model.keras`` -> ``model``), its pair without ``_structure.json``, or its folder.

The primary model of a drop, the one audited and stored, is the one named ``model`` (for one name in
several formats: ``.keras``, then ``.h5``/``.hdf5``, then the JSON pair, then the SavedModel), else
the alphabetically first name. The other models (e.g. reseeded copies) must have the same
architecture (`audit.loading`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path

#: The name that makes a model primary, whatever its format.
PRIMARY_NAME = "model"
STRUCTURE_SUFFIX = "_structure.json"
WEIGHTS_SUFFIX = "_weights.h5"
#: Keras 3 weights-only files (``model.save_weights``): no architecture, so not a model.
KERAS3_WEIGHTS_SUFFIX = ".weights.h5"
SAVED_MODEL_FILE = "saved_model.pb"
H5_SUFFIXES = (".h5", ".hdf5")
#: What a drop may hold, for messages.
ACCEPTED = (
    "model.keras, model.h5, <name>_structure.json + <name>_weights.h5, or a SavedModel folder "
    "<name>/saved_model.pb"
)


class ModelFormat(StrEnum):
    KERAS = "keras"
    HDF5 = "hdf5"
    KERAS2_JSON = "keras2-json"
    SAVED_MODEL = "saved-model"


#: For one model name in several formats, the first of these is primary.
_FORMAT_ORDER = (ModelFormat.KERAS, ModelFormat.HDF5, ModelFormat.KERAS2_JSON, ModelFormat.SAVED_MODEL)


def model_format(path: Path) -> ModelFormat | None:
    """The format `path` is a model in, judged by its name (and, for folders, ``saved_model.pb``).

    A ``<name>_weights.h5`` file is not a model on its own: it is the second half of a pair, and
    `model_format` of its ``<name>_structure.json`` is `KERAS2_JSON`. None for anything else.
    """
    name = path.name
    if path.is_dir():
        return ModelFormat.SAVED_MODEL if (path / SAVED_MODEL_FILE).is_file() else None
    if name.endswith(".keras"):
        return ModelFormat.KERAS
    if name.endswith(STRUCTURE_SUFFIX) and len(name) > len(STRUCTURE_SUFFIX):
        return ModelFormat.KERAS2_JSON
    if name.endswith(H5_SUFFIXES) and not name.endswith((WEIGHTS_SUFFIX, KERAS3_WEIGHTS_SUFFIX)):
        return ModelFormat.HDF5
    return None


def model_name(path: Path) -> str:
    """The model's name: ``model.keras`` -> ``model``, ``0_10.1_structure.json`` -> ``0_10.1``."""
    name = path.name
    if name.endswith(STRUCTURE_SUFFIX):
        return name[: -len(STRUCTURE_SUFFIX)]
    for suffix in (".keras", *H5_SUFFIXES):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def weights_file(structure: Path) -> Path:
    """The ``<name>_weights.h5`` that goes with ``<name>_structure.json``."""
    return structure.with_name(model_name(structure) + WEIGHTS_SUFFIX)


def structure_file(weights: Path) -> Path:
    """The ``<name>_structure.json`` that goes with ``<name>_weights.h5``."""
    return weights.with_name(weights.name[: -len(WEIGHTS_SUFFIX)] + STRUCTURE_SUFFIX)


def model_files(path: Path) -> tuple[Path, ...]:
    """Every file the model at `path` is made of: the file, the JSON pair, or a SavedModel's files."""
    form = model_format(path)
    if form is ModelFormat.KERAS2_JSON:
        return (path, weights_file(path))
    if form is ModelFormat.SAVED_MODEL:
        return tuple(sorted(p for p in path.rglob("*") if p.is_file() or p.is_symlink()))
    return (path,)


def primary_first(paths: Iterable[Path]) -> tuple[Path, ...]:
    """`paths` ordered by the primary rule: the model named ``model`` first, then by name."""

    def key(path: Path) -> tuple[bool, str, int]:
        name = model_name(path)
        form = model_format(path)
        rank = _FORMAT_ORDER.index(form) if form is not None else len(_FORMAT_ORDER)
        return (name != PRIMARY_NAME, name, rank)

    return tuple(sorted(paths, key=key))


def model_content_hash(path: Path) -> str:
    """Hex SHA-256 identifying the model's content.

    A single file hashes to the SHA-256 of its bytes (as eval files do, so the hash of a
    ``model.keras`` is what it always was); a JSON pair or a SavedModel folder to the SHA-256 of
    each file's relative name and bytes, in name order.
    """
    files = model_files(path)
    if files == (path,):
        return _file_digest(path, hashlib.sha256()).hexdigest()
    base = path.parent if model_format(path) is ModelFormat.KERAS2_JSON else path
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.relative_to(base).as_posix().encode("utf-8") + b"\0")
        _file_digest(file, digest)
    return digest.hexdigest()


def _file_digest(path: Path, digest: hashlib._Hash) -> hashlib._Hash:
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest
