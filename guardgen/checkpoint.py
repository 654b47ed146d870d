"""Folder checkpoints: ``config.json`` + ``*.safetensors``, atomic writes, safe loading, resumable state.

Rules (see DESIGN.md, "Runs, checkpoints, safety of files"):
- every file is written to a temporary name in the same folder and renamed into place, so an
  interrupted write never leaves a half file where a good one stood;
- weights are read with safetensors only; a pickle (``.pt``/``.pth``/``.bin``) is refused unless the
  caller passes ``allow_pickle=True``, and even then it is read with ``torch.load(weights_only=True)``;
- long loops save ``training_state/`` (model, optimizer, step, RNG) and resume from it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from guardgen.errors import GuardgenError

__all__ = [
    "atomic_path",
    "atomic_dir",
    "save_json",
    "load_json",
    "save_safetensors",
    "load_safetensors",
    "check_safetensors",
    "load_state_dict",
    "save_checkpoint",
    "load_checkpoint",
    "save_training_state",
    "load_training_state",
    "check_training_state",
    "PICKLE_SUFFIXES",
    "check_out",
    "mismatch",
    "fingerprint",
]

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path`` (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:  # name the folder the user gave, not the temporary file
        raise OSError(err.errno, err.strerror, str(path.parent)) from None
    os.close(fd)
    tmp = Path(tmp)
    tmp.chmod(0o666 & ~_umask())  # mkstemp makes 0600; the result gets the usual permissions of a new file
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` as a whole. Where ``path`` is a
    symbolic link, the folder it points to is replaced and the link kept."""
    path = Path(path)
    if path.is_symlink():
        path = path.resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except OSError as err:
        raise OSError(err.errno, err.strerror, str(path.parent)) from None
    tmp.chmod(0o777 & ~_umask())
    try:
        yield tmp
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _writable(folder: Path) -> bool:
    """Whether a new entry can be made in ``folder``: tried, since permission bits do not tell for root, nor for
    /proc, /sys or a full disk."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".guardgen-probe.", dir=folder))
    except OSError:
        return False
    return True


def check_out(out: str | os.PathLike | None, inputs: dict | list[tuple[str, Any]] | None = None, option: str = "--out", *,
              replaces: bool = True, data: dict | None = None) -> None:
    """Refuse, before any work, an output folder that cannot be made (a file on its path, a folder that is not
    writable; where the result replaces ``out`` as a whole, ``replaces``, one whose parent is not writable) or that
    overlaps an input.

    ``inputs`` maps a name ("--model") to its path (None: unused), as a dict or (name, path) pairs: ``out`` may not be
    that folder, nor, where the result replaces its ``--out`` as a whole (``replaces``), hold it or lie inside it.
    ``data`` maps a name ("--real") to the image folders the command reads (a path, a spec or a list; what is not a
    folder is passed over): ``out`` may not be one or lie inside one even when nothing is replaced, since a later read
    of the folder would take the run's files for images. ``out=None`` (nothing written) passes.
    """
    if out is None:
        return
    out = Path(out)
    if out.is_symlink() and out.exists():
        out = out.resolve()  # the result goes where the link points (atomic_dir)
    existing = next(p for p in (out.absolute(), *out.absolute().parents) if p.exists() or p.is_symlink())
    if existing.is_symlink() and not existing.exists():
        raise GuardgenError(f"{option} {out}: {existing} is a broken link")
    if not existing.is_dir():
        raise GuardgenError(f"{option} {out}: {existing} is a file, not a folder")
    if not _writable(existing):
        raise GuardgenError(f"{option} {out}: {existing} is not writable")
    if replaces and existing == out.absolute() and not _writable(existing.parent):
        raise GuardgenError(f"{option} {out}: its folder {existing.parent} is not writable, and the result replaces "
                            f"{out} as a whole; pass a folder in a writable place")
    target = out.resolve()
    pairs = [(name, path, False) for name, path in (inputs.items() if isinstance(inputs, dict) else inputs or ())]
    for name, paths in (data or {}).items():
        for path in paths if isinstance(paths, (list, tuple)) else [paths]:
            if path is not None and str(path) and Path(path).is_dir():
                pairs.append((name, path, True))
    for name, path, read in pairs:
        if path is None:
            continue
        given = Path(path).resolve()
        if given == target:
            raise GuardgenError(f"{option} {out}: the same folder as {name}; the results would be written into it, "
                                "so pass another folder")
        if (replaces or read) and given in target.parents:
            why = "a later read of it would take the run's files for images" if read else "pass a folder outside it"
            raise GuardgenError(f"{option} {out}: inside {name} ({path}); {why}")
        if replaces and target in given.parents:
            raise GuardgenError(f"{option} {out}: holds {name} ({path}), which the result would replace; pass another folder")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return _jsonable(obj.item())
    return obj


def save_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n")
    return path


def load_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise GuardgenError(f"{path}: a folder, not a JSON file" if path.is_dir() else f"{path}: no such file")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise GuardgenError(f"{path}: not valid JSON ({err.__class__.__name__}); restore or rebuild it") from None


def save_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Write a flat tensor dict as safetensors, atomically (tensors are made contiguous, on CPU)."""
    from safetensors.torch import save_file

    path = Path(path)
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(flat, str(tmp), metadata={k: str(v) for k, v in (metadata or {}).items()})
        tmp.chmod(0o666 & ~_umask())  # safetensors writes a new file of its own, 0600
    return path


# int64 is a counter or an index (BatchNorm, position ids); narrower integers are quantised weights
_INTEGER_WEIGHTS = {"I8": "int8", "U8": "uint8", "I16": "int16", "U16": "uint16", "I32": "int32", "U32": "uint32"}


def check_safetensors(path: str | os.PathLike, *, weights: bool = False) -> None:
    """Validate a safetensors file's header and length without reading the tensors (cheap).

    Raises a one-line GuardgenError for a truncated, padded or garbled file, and, with ``weights=True`` (a
    model's weights), for a tensor of a narrow integer type: a quantised checkpoint, which would otherwise be
    cast to floats silently and run as garbage.
    """
    path = Path(path)
    size = path.stat().st_size
    problem = None
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if n < 2 or n + 8 > size:
            problem = "header runs past the end of the file"
        else:
            try:
                header = json.loads(f.read(n))
                end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
                if 8 + n + end != size:
                    problem = f"expected {8 + n + end} bytes, found {size}"
                narrow = weights and next((k for k, v in header.items()
                                           if k != "__metadata__" and v["dtype"] in _INTEGER_WEIGHTS), None)
                if narrow and not problem:
                    raise GuardgenError(f"{path}: weight {narrow} is {_INTEGER_WEIGHTS[header[narrow]['dtype']]}; "
                                        "guardgen loads floating-point weights (a quantised checkpoint is not supported)")
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, IndexError):
                problem = "unreadable header"
    if problem:
        raise GuardgenError(f"{path}: corrupt or truncated safetensors file ({problem}); rebuild or re-download it")


def load_safetensors(path: str | os.PathLike, device: str | torch.device = "cpu", *,
                     weights: bool = False) -> dict[str, torch.Tensor]:
    """Read a safetensors file; a missing, truncated or corrupt file raises a one-line GuardgenError, and so does,
    with ``weights=True``, a model's weights of a narrow integer type (:func:`check_safetensors`)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise GuardgenError(f"{path}: a folder, not a .safetensors file" if path.is_dir() else f"{path}: no such weight file")
    check_safetensors(path, weights=weights)
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        first = str(err).splitlines()[0] if str(err) else err.__class__.__name__
        raise GuardgenError(
            f"{path}: corrupt or truncated safetensors file ({first}); rebuild or re-download it"
        ) from None


def mismatch(err: RuntimeError) -> str:
    """The telling line of ``nn.Module.load_state_dict``'s error (its first line only says "Error(s) in loading
    state_dict for X:"; the next names the missing, unexpected or mis-sized keys), at most 200 characters."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
    return (lines[1] if len(lines) > 1 and lines[0].endswith(":") else lines[0])[:200]


def load_state_dict(path: str | os.PathLike, *, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Read weights from ``path``: safetensors always; a pickle only with ``allow_pickle=True``.

    A pickle is read with ``torch.load(weights_only=True)``, which refuses arbitrary objects.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_safetensors(path, weights=True)
    if path.suffix in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise GuardgenError(
                f"{path}: refusing to unpickle a {path.suffix} file; convert it to .safetensors "
                "with `guardgen convert FILE` (which reads it with torch.load(weights_only=True))"
            )
        if not path.is_file():
            raise GuardgenError(f"{path}: a folder, not a weight file" if path.is_dir() else f"{path}: no such weight file")
        try:
            import warnings

            with warnings.catch_warnings():  # a sparse tensor is refused below, in one line
                warnings.filterwarnings("ignore", message="Validating sparse tensor invariants")
                obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any failure here is a bad file
            raise GuardgenError(f"{path}: cannot be read safely ({err.__class__.__name__})") from None
        if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise GuardgenError(f"{path}: does not hold a flat state dict of tensors")
        named = next((k for k in obj if not isinstance(k, str)), None)
        if named is not None:
            raise GuardgenError(f"{path}: a state dict's keys are parameter names; this one has the key {named!r}")
        odd = next((k for k, v in obj.items() if v.layout != torch.strided or v.is_meta), None)
        if odd is not None:
            what = "a meta tensor (no data)" if obj[odd].is_meta else f"a {obj[odd].layout} tensor"
            raise GuardgenError(f"{path}: {odd!r} is {what}; only dense tensors with data can be saved as safetensors")
        return obj
    raise GuardgenError(f"{path}: unknown weight format {path.suffix!r}; expected .safetensors")


def save_checkpoint(
    folder: str | os.PathLike,
    config: dict,
    weights: dict[str, dict[str, torch.Tensor]],
    extra_files: dict[str, Any] | None = None,
) -> Path:
    """Write ``folder/config.json`` and ``folder/<name>.safetensors`` for each entry of ``weights``.

    The whole folder is swapped in at the end, so a reader never sees a half-written checkpoint.
    ``extra_files`` maps file names to JSON-able objects (model card, results, ...).
    """
    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        for name, state in weights.items():
            save_safetensors(state, tmp / f"{name}.safetensors")
        for name, obj in (extra_files or {}).items():
            if isinstance(obj, str):
                (tmp / name).write_text(obj)
            else:
                save_json(obj, tmp / name)
        save_json(config, tmp / "config.json")
    return folder


def load_checkpoint(folder: str | os.PathLike, *, data: Sequence[str] = ()) -> tuple[dict, dict[str, dict[str, torch.Tensor]]]:
    """Read a folder written by :func:`save_checkpoint`: ``(config, {name: state_dict})``. Every entry is checked as a
    model's weights (no quantised tensors) except the ``data`` ones (e.g. stored images)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GuardgenError(f"{folder}: no such checkpoint folder")
    config = load_json(folder / "config.json")
    weights = {p.stem: load_safetensors(p, weights=p.stem not in data) for p in sorted(folder.glob("*.safetensors"))}
    return config, weights


# ---------------------------------------------------------------------------------------------------
# resumable training state


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, pstate in state["state"].items():
        for key, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{idx}.{key}"] = value
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if not name.startswith("optimizer."):
            continue
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = value
    for name, value in meta["scalars"].items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_training_state(
    folder: str | os.PathLike,
    *,
    step: int,
    modules: dict[str, torch.nn.Module],
    optimizers: dict[str, torch.optim.Optimizer] | None = None,
    generator: torch.Generator | None = None,
    extra: dict | None = None,
) -> Path:
    """Save everything a loop needs to continue exactly where it stopped (atomically, as one folder)."""
    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        meta: dict[str, Any] = {"step": step, "extra": extra or {}, "optimizers": {}}
        for name, module in modules.items():
            save_safetensors(module.state_dict(), tmp / f"{name}.safetensors")
        for name, opt in (optimizers or {}).items():
            tensors, ometa = _flatten_optimizer(opt)
            save_safetensors(tensors, tmp / f"{name}.optim.safetensors")
            meta["optimizers"][name] = ometa
        rng = {"torch": torch.get_rng_state()}
        if generator is not None:
            rng["generator"] = generator.get_state()
        save_safetensors(rng, tmp / "rng.safetensors")
        save_json(meta, tmp / "state.json")
    return folder


def settings_record(obj, skip: tuple[str, ...] = ()) -> dict:
    """A dataclass's settings (its init fields but ``skip``) as they read back from JSON (tuples as lists): saved
    beside a training state, and compared on resume so that a run is not continued under other settings."""
    import dataclasses

    values = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.init and f.name not in skip}
    return json.loads(json.dumps(values, default=str))


def fingerprint(module: torch.nn.Module) -> str:
    """A module's class, size and a checksum of its weights (a record compared on resume: the same model reads the
    same on any device; another model, or the same one trained further, reads otherwise)."""
    count, total = 0, 0.0
    with torch.no_grad():
        for value in module.state_dict().values():
            if value.is_floating_point():
                count += value.numel()
                total += float(value.double().sum())
    return f"{type(module).__name__}, {count} weights, checksum {total:.6g}"


def check_resumable(saved: dict | None, current: dict, where: str | os.PathLike) -> None:
    """One line naming the settings that differ from the interrupted run's (``saved``: its ``settings_record``); a
    state that recorded other settings altogether (another method's or command's, an older version's) is refused as
    such."""
    if saved is None or saved == current:
        return
    if not isinstance(saved, dict) or set(saved) != set(current):
        raise GuardgenError(f"{where}: the interrupted run was another method's or command's, or an older guardgen's (it "
                            "recorded other settings); pass another --out, or start again without --resume (which "
                            "discards that state)")
    changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    raise GuardgenError(f"{where}: the interrupted run used other settings ({', '.join(changed)}); resume with its settings, "
                        "or start again without --resume")


_NOT_A_STATE = ("{folder}: not a training state this run can continue (another command's, or a damaged one); pass "
                "another --out, or start again without --resume (which discards it)")


def check_training_state(folder: str | os.PathLike, settings: dict | None = None) -> dict:
    """``folder/state.json`` as :func:`save_training_state` wrote it, refused in one line if guardgen did not write
    it or, with ``settings``, if it was saved under other settings (:func:`check_resumable`). Loads no tensor, so a
    command can check a state before any slow work."""
    folder = Path(folder)
    meta = load_json(folder / "state.json")
    if not (isinstance(meta, dict) and isinstance(meta.get("step"), int) and isinstance(meta.get("extra", {}), dict)
            and isinstance(meta.get("optimizers", {}), dict)):
        raise GuardgenError(_NOT_A_STATE.format(folder=folder))
    if settings is not None:
        check_resumable(meta.get("extra", {}).get("settings", {}), settings, folder)
    return meta


def load_training_state(
    folder: str | os.PathLike,
    *,
    modules: dict[str, torch.nn.Module],
    optimizers: dict[str, torch.optim.Optimizer] | None = None,
    generator: torch.Generator | None = None,
    settings: dict | None = None,
) -> tuple[int, dict]:
    """Restore what :func:`save_training_state` wrote; returns ``(step, extra)``. With ``settings`` (a
    :func:`settings_record`), a state saved with other ``extra["settings"]`` is refused before anything is loaded."""
    folder = Path(folder)
    meta = check_training_state(folder, settings)
    damaged = _NOT_A_STATE.format(folder=folder)
    for name, module in modules.items():
        try:
            module.load_state_dict(load_safetensors(folder / f"{name}.safetensors"))
        except RuntimeError as err:  # another model's weights: missing keys or other shapes
            raise GuardgenError(f"{folder}: its {name} weights do not fit this model ({mismatch(err)}); rerun without "
                                "--resume") from None
    for name, opt in (optimizers or {}).items():
        if name not in meta.get("optimizers", {}):
            raise GuardgenError(damaged)
        tensors = load_safetensors(folder / f"{name}.optim.safetensors")
        opt.load_state_dict(_unflatten_optimizer(tensors, meta["optimizers"][name]))
    rng = load_safetensors(folder / "rng.safetensors")
    torch.set_rng_state(rng["torch"])
    if generator is not None and "generator" in rng:
        generator.set_state(rng["generator"])
    return int(meta["step"]), meta.get("extra", {})
