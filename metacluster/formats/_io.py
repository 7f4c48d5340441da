"""Safe reading of checkpoint files: safetensors, or torch.load with weights_only.

Nothing here ever unpickles a class: a file that needs code to load is refused
with `UnsafeCheckpointError`, and every other failure is a `FormatError`.
"""

from __future__ import annotations

import io
import json
import pickle
import pickletools
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from metacluster.errors import FormatError, UnsafeCheckpointError

# Wrappers that training scripts commonly put around a state dict.
_STATE_DICT_WRAPPERS = ("state_dict", "model_state_dict", "model", "net", "module")

UNSAFE_MESSAGE = (
    "{name} needs arbitrary code to unpickle (a whole pickled module or object) and was "
    "refused; save `model.state_dict()` with torch.save or safetensors instead"
)


EXPECTED = (
    "expected a safetensors file or a PyTorch state dict saved with torch.save "
    "(read with weights_only=True; a pykan checkpoint is its _config.yml + _state pair)"
)


def unreadable(path: Path, what: str) -> FormatError:
    """The one message of every file that is no checkpoint: its name, what it looks like,
    what was expected (never a bare exception of the reader, such as `KeyError: 101`)."""
    return FormatError(f"{path.name} is not a readable model checkpoint: {what}; {EXPECTED}")


def _looks_like(path: Path) -> str:
    """What a file that no reader accepted looks like, from its first bytes and size."""
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(4096)
    except OSError as exc:
        return f"it cannot be read ({exc.strerror or exc})"
    if size == 0:
        return "the file is empty"
    if head.startswith(b"PK"):
        if not zipfile.is_zipfile(path):
            return f"a truncated or damaged zip archive ({size} bytes)"
        return "a zip archive that torch.save did not write (no data.pkl of tensors)"
    # UTF-8 with no NUL (a character cut at the 4096th byte is allowed for)
    if b"\x00" not in head and head.decode("utf-8", errors="replace").count("\ufffd") <= 1:
        return "a text file"
    return f"{size} bytes of no known container (not a zip, pickle or safetensors)"


def is_safetensors(path: Path) -> bool:
    """True when the file starts like a safetensors container (u64 header size + JSON)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(9)
    except OSError as exc:
        raise FormatError(f"cannot read {path.name}: {exc.strerror or exc}") from exc
    if len(head) < 9:
        return False
    (size,) = struct.unpack("<Q", head[:8])
    # A truncated file still counts, so the error names the real problem.
    return head[8:9] == b"{" and size > 0


def read_safetensors(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors (CPU, original dtypes) and the string metadata of a safetensors file."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:  # type: ignore[no-untyped-call]
            metadata = dict(fh.metadata() or {})
            tensors = {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own error types; all mean "corrupt"
        detail = " ".join(str(exc).split())[:200]
        raise unreadable(path, f"a damaged or truncated safetensors file ({detail})") from exc
    return tensors, metadata


# Opcodes that name a global (a class or function) for the unpickler to import.
_GLOBAL_OPCODES = frozenset({"GLOBAL", "STACK_GLOBAL", "INST", "EXT1", "EXT2", "EXT4"})
# A legacy (non-zip) torch file is a few pickles in a row (magic number, protocol,
# system info, the object, storage keys) followed by raw storage bytes.
_MAX_PICKLES = 5


def _scan_pickles(fh: IO[bytes]) -> bool | None:
    """Statically parse consecutive pickles (nothing is executed or imported).

    True when a complete pickle names a global, False when the stream starts with
    complete pickles that name none, None when it does not start with a pickle.
    """
    parsed = False
    for _ in range(_MAX_PICKLES):
        names_global = False
        try:
            for opcode, _arg, _pos in pickletools.genops(fh):
                names_global = names_global or opcode.name in _GLOBAL_OPCODES
        except Exception:  # genops raises ValueError, UnicodeDecodeError, ... on non-pickles
            break
        if names_global:
            return True
        parsed = True
        pos = fh.tell()
        if not fh.read(1):  # end of the stream
            break
        fh.seek(pos)
    return False if parsed else None


def _pickle_names_global(path: Path) -> bool | None:
    """`_scan_pickles` of the file's object pickle (a torch zip's data.pkl, else the file)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            member = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
            if member is None:
                return None
            # The object pickle alone: tensor storages are separate members.
            return _scan_pickles(io.BytesIO(archive.read(member)))
    with path.open("rb") as fh:
        return _scan_pickles(fh)


# torch.save writes its zip members uncompressed; torch.load also inflates deflated
# ones, so a small crafted file could expand ~1000x in memory. A checkpoint may not
# expand to more than this many times its size (and 16 MB) when loaded.
MAX_ZIP_EXPANSION = 4
_ZIP_SLACK_BYTES = 16 << 20


def check_zip_expansion(path: Path) -> None:
    """FormatError when a zip checkpoint's members inflate far beyond the file's size."""
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            inflated = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise unreadable(path, _looks_like(path)) from exc
    size = path.stat().st_size
    if inflated > max(MAX_ZIP_EXPANSION * size, size + _ZIP_SLACK_BYTES):
        raise FormatError(
            f"{path.name} expands to {inflated} bytes from {size} (a compressed archive); "
            "torch.save writes checkpoints uncompressed"
        )


def torch_load_safe(path: Path) -> Any:
    """torch.load restricted to tensors and plain containers (never runs pickled code)."""
    check_zip_expansion(path)
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses any global it does not know (a module class, os.system,
        # ...) but also any byte stream that is no pickle at all: tell the two apart.
        try:
            names_global = _pickle_names_global(path)
        except Exception as scan_exc:  # unreadable or a damaged zip: no checkpoint either
            raise unreadable(path, _looks_like(path)) from scan_exc
        if names_global:
            raise UnsafeCheckpointError(UNSAFE_MESSAGE.format(name=path.name)) from exc
        if names_global is None:
            raise unreadable(path, _looks_like(path)) from exc
        raise unreadable(
            path, "a pickle that torch.load(weights_only=True) does not accept"
        ) from exc
    except Exception as exc:  # torch raises many types for corrupt files; all mean "unreadable"
        # What the file looks like, not torch's message (a KeyError's is just a number).
        raise unreadable(path, _looks_like(path)) from exc


def unwrap_state_dict(obj: Any, name: str) -> dict[str, Tensor]:
    """The flat {key: tensor} state dict inside what torch.load returned."""
    if isinstance(obj, Mapping):
        tensors = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
        if tensors and len(tensors) == len(obj) and all(isinstance(k, str) for k in obj):
            return dict(tensors)
        for wrapper in _STATE_DICT_WRAPPERS:
            inner = obj.get(wrapper)
            if isinstance(inner, Mapping) and inner:
                return unwrap_state_dict(inner, name)
    kind = type(obj).__name__
    raise FormatError(f"{name} holds a {kind}, not a state dict of tensors")


def read_tensor_file(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """State dict and metadata of one file, whichever of the two safe containers it is."""
    if not path.is_file():
        raise FormatError(f"no such checkpoint file: {path}")
    if is_safetensors(path):
        return read_safetensors(path)
    return unwrap_state_dict(torch_load_safe(path), path.name), {}


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{path.name} is not valid JSON: {exc}") from exc


def write_safetensors(tensors: Mapping[str, Tensor], path: Path, metadata: dict[str, str]) -> None:
    """safetensors needs contiguous, non-shared storage: give it private copies."""
    plain = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(plain, str(path), metadata=metadata)


def save_torch_state(tensors: Mapping[str, Tensor], path: Path) -> None:
    """torch.save of a plain dict of tensors: loadable with weights_only=True."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}, path)
