"""Resume state without pickle: ``resume.safetensors`` (every tensor) + ``resume.json`` (everything else).

A trainer state is a nested structure of dicts, lists, tuples, numbers, strings, tensors and numpy arrays
(model and optimizer state dicts, the balancer's and strategy's states, RNG states). :func:`pack` walks it,
moves every tensor into a flat ``{key: tensor}`` dict and leaves a marker in its place:

- ``{"__tensor__": "t12"}``: tensor ``t12`` of ``resume.safetensors``;
- ``{"__ndarray__": "t13", "dtype": "uint32", "shape": [624]}``: a numpy array stored as its bytes (uint8);
- ``{"__tuple__": [...]}``: a tuple; ``{"__dict__": [[key, value], ...]}``: a dict with non-string keys
  (the optimizer's state is keyed by parameter index), or with a key that looks like a marker.

Floats keep NaN / inf (Python's JSON spelling). Both files carry the same random ``save_id`` (the JSON
field and the safetensors metadata), so a crash between the two renames is detected rather than loading a
mismatched pair. Nothing here ever unpickles: an old ``resume.pt`` is refused with a one-line message.
Format reference: docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import random
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtlkit.errors import MtlkitError

TENSORS_FILE = "resume.safetensors"
JSON_FILE = "resume.json"
LEGACY_FILE = "resume.pt"
FORMAT = "mtlkit-resume"
VERSION = 1

_MARKERS = ("__tensor__", "__ndarray__", "__tuple__", "__dict__")


class ResumeError(MtlkitError):
    """A resume state that can not be read (corrupt, mismatched, pickled, from another config)."""


# ----------------------------------------------------------------------------------------- pack / unpack
def pack(state: Any) -> tuple[dict[str, torch.Tensor], Any]:
    """``(tensors, meta)``: ``meta`` is JSON-serialisable and refers to ``tensors`` by key."""
    tensors: dict[str, torch.Tensor] = {}

    def put(t: torch.Tensor) -> str:
        key = f"t{len(tensors)}"
        tensors[key] = t.detach().to("cpu", copy=True).contiguous()  # a copy: no shared storage in the file
        return key

    def enc(x: Any, where: str) -> Any:
        if isinstance(x, torch.Tensor):
            return {"__tensor__": put(x)}
        if isinstance(x, np.ndarray):
            a = np.ascontiguousarray(x)
            return {"__ndarray__": put(torch.from_numpy(a.view(np.uint8).reshape(-1).copy())),
                    "dtype": a.dtype.str, "shape": list(a.shape)}
        if isinstance(x, np.generic):
            return x.item()
        if x is None or isinstance(x, bool | int | float | str):
            return x
        if isinstance(x, tuple):
            return {"__tuple__": [enc(v, f"{where}[{i}]") for i, v in enumerate(x)]}
        if isinstance(x, list):
            return [enc(v, f"{where}[{i}]") for i, v in enumerate(x)]
        if isinstance(x, dict):
            if all(isinstance(k, str) for k in x) and not any(k in _MARKERS for k in x):
                return {k: enc(v, f"{where}.{k}") for k, v in x.items()}
            return {"__dict__": [[enc(k, where), enc(v, f"{where}[{k!r}]")] for k, v in x.items()]}
        if isinstance(x, torch.dtype | torch.device):
            return str(x)
        raise MtlkitError(f"resume state: {where or 'the state'} holds a {type(x).__name__}, which the no-pickle "
                          "format can not store (use tensors, numbers, strings, lists and dicts)")

    return tensors, enc(state, "")


def unpack(meta: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`pack`; an unknown tensor key is a :class:`ResumeError`."""

    def tensor(key: Any) -> torch.Tensor:
        if not isinstance(key, str) or key not in tensors:
            raise ResumeError(f"{JSON_FILE} refers to tensor {key!r}, which {TENSORS_FILE} does not hold")
        return tensors[key]

    def dec(x: Any) -> Any:
        if isinstance(x, list):
            return [dec(v) for v in x]
        if not isinstance(x, dict):
            return x
        if "__tensor__" in x:
            return tensor(x["__tensor__"])
        if "__ndarray__" in x:
            raw = tensor(x["__ndarray__"]).numpy().tobytes()
            return np.frombuffer(raw, dtype=np.dtype(x["dtype"])).reshape(x["shape"]).copy()
        if "__tuple__" in x:
            return tuple(dec(v) for v in x["__tuple__"])
        if "__dict__" in x:
            return {_hashable(dec(k)): dec(v) for k, v in x["__dict__"]}
        return {k: dec(v) for k, v in x.items()}

    try:
        return dec(meta)
    except ResumeError:
        raise
    except (TypeError, ValueError, KeyError) as e:
        raise ResumeError(f"{JSON_FILE} is malformed ({type(e).__name__}: {e})") from None


def _hashable(k: Any) -> Any:
    return tuple(_hashable(v) for v in k) if isinstance(k, list | tuple) else k


# ----------------------------------------------------------------------------------------- RNG states
def rng_state(loader_generator: torch.Generator | None = None) -> dict[str, Any]:
    """Every RNG a run draws from, as uint8 tensors (torch, CUDA, numpy, Python, the training loader's)."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": np_state[0], "key": torch.from_numpy(np_state[1].astype(np.uint32).view(np.uint8).copy()),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": version, "internal": torch.from_numpy(np.asarray(internal, np.uint32).view(np.uint8)),
                   "gauss": gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if loader_generator is not None:
        state["loader"] = loader_generator.get_state()
    return state


def set_rng_state(state: dict[str, Any], loader_generator: torch.Generator | None = None) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    key = n["key"].numpy().view(np.uint32).copy()
    np.random.set_state((n["name"], key, int(n["pos"]), int(n["has_gauss"]), float(n["cached_gaussian"])))
    p = state["python"]
    internal = tuple(int(v) for v in p["internal"].numpy().view(np.uint32))
    random.setstate((int(p["version"]), internal, p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if loader_generator is not None and "loader" in state:
        loader_generator.set_state(state["loader"])


# ----------------------------------------------------------------------------------------- files
def _atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def save_resume(state: dict[str, Any], run_dir: str | Path) -> None:
    """Write ``resume.safetensors`` then ``resume.json`` (each to a temporary file, then renamed)."""
    from safetensors.torch import save_file

    run_dir = Path(run_dir)
    tensors, meta = pack(state)
    save_id = uuid.uuid4().hex  # os.urandom: draws from no RNG of the run
    doc = {"format": FORMAT, "version": VERSION, "save_id": save_id, "state": meta}
    _atomic(run_dir / TENSORS_FILE, lambda p: save_file(tensors, str(p), metadata={"save_id": save_id}))
    _atomic(run_dir / JSON_FILE, lambda p: p.write_text(json.dumps(doc)))
    legacy = run_dir / LEGACY_FILE
    if legacy.is_file():  # superseded; never read
        legacy.unlink()


def load_resume(run_dir: str | Path) -> dict[str, Any] | None:
    """The state :func:`save_resume` wrote, or None when the run has none; one-line errors for anything else."""
    from safetensors import safe_open

    run_dir = Path(run_dir)
    jpath, tpath = run_dir / JSON_FILE, run_dir / TENSORS_FILE
    if not jpath.is_file() and not tpath.is_file():
        if (run_dir / LEGACY_FILE).is_file():
            raise ResumeError(f"{run_dir / LEGACY_FILE} is a pickled resume state of an older mtlkit, which is never "
                              "loaded (unpickling can run code); start the run again in a new --out")
        return None
    for p in (jpath, tpath):
        if not p.is_file():
            raise ResumeError(f"{p} is missing (a resume state is {JSON_FILE} + {TENSORS_FILE}); "
                              "start the run again in a new --out")
    try:
        doc = json.loads(jpath.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ResumeError(f"{jpath} is corrupt ({type(e).__name__}); start the run again in a new --out") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or "state" not in doc:
        raise ResumeError(f"{jpath} is not an mtlkit resume state; start the run again in a new --out")
    if doc.get("version") != VERSION:
        raise ResumeError(f"{jpath} has format version {doc.get('version')!r}, this mtlkit reads {VERSION}; "
                          "resume with the mtlkit that wrote it")
    try:
        with safe_open(str(tpath), framework="pt", device="cpu") as f:
            save_id = (f.metadata() or {}).get("save_id")
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118  (safe_open has no __iter__)
    except Exception as e:  # safetensors raises its own error types for truncated / garbage files
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ResumeError(f"{tpath} is corrupt ({msg}); start the run again in a new --out") from None
    if save_id != doc.get("save_id"):
        raise ResumeError(f"{jpath} and {tpath} come from different saves (a crash while saving?); "
                          "start the run again in a new --out")
    state = unpack(doc["state"], tensors)
    if not isinstance(state, dict) or "iteration" not in state:
        raise ResumeError(f"{jpath} holds no trainer state; start the run again in a new --out")
    return state


# ----------------------------------------------------------------------------------------- config check
#: config keys that may change on resume (they change how the run is shown or stored, not what it computes)
RESUME_FREE_KEYS = ("run.progress", "data.num_workers", "run.out", "run.device", "run.baseline", "run.baseline_cache")


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The nested config keys (``optim.lr``) whose values differ, besides :data:`RESUME_FREE_KEYS`."""
    a, b = _flat(saved), _flat(current)
    keys = sorted(k for k in set(a) | set(b) if a.get(k, "<unset>") != b.get(k, "<unset>"))
    return [k for k in keys if k not in RESUME_FREE_KEYS]


def check_config(saved: dict[str, Any] | None, current: dict[str, Any] | None, run_dir: Path) -> None:
    """Refuse to resume under a different config (naming the differing keys)."""
    if saved is None or current is None:
        return
    diff = config_differences(saved, current)
    if diff:
        a, b = _flat(saved), _flat(current)
        shown = ", ".join(f"{k}: {a.get(k, '<unset>')!r} -> {b.get(k, '<unset>')!r}" for k in diff[:6])
        more = f" (+{len(diff) - 6} more)" if len(diff) > 6 else ""
        raise ResumeError(f"{run_dir} was trained with a different config ({shown}{more}); resume with the "
                          "run's own config.yaml, or train in a new --out")
