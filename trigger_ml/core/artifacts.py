"""Stage artifacts, the one home for: hashes, tool versions, ``manifest.json``, and atomic outputs
(:func:`atomic_dir` for a directory, :func:`atomic_file` / :func:`write_text_atomic` for one file).

A stage writes its output directory through :func:`atomic_dir` (build in a temporary sibling
directory, rename onto the target at the end) and records what it consumed and produced with
:func:`write_manifest`. :func:`read_manifest` is the single place that validates a manifest: every
problem is an :class:`~trigger_ml.core.errors.ArtifactError` whose message is one line naming the file
and the fix.

``manifest.json`` layout::

    {
      "manifest_version": 1,
      "stage": "firmware.hls",
      "created": "2025-01-01T12:00:00+00:00",          # UTC, ISO 8601
      "seed": null,
      "inputs": {"model": {"path": "/abs/model.keras", "sha256": "...", "kind": "file"}},
      "config": {...},                                  # stage parameters (JSON)
      "versions": {"keras": "3.15.0", "hls4ml": "1.3.0", ...},   # null when not installed
      "figures": {...}                                  # numbers the stage measured
    }
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from trigger_ml.core.constants import MANIFEST_FILE as MANIFEST_NAME
from trigger_ml.core.errors import ArtifactError

MANIFEST_VERSION = 1
DEFAULT_PACKAGES = ("trigger_ml", "keras", "hgq2", "hls4ml", "alkaid", "tensorflow", "numpy")

# Distribution names to try for an import-style name (tensorflow is often installed as tensorflow-cpu).
_DIST_ALIASES = {
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tf-nightly"),
    "trigger_ml": ("trigger_ml", "trigger-ml"),
    "hgq2": ("hgq2", "HGQ2"),
}

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def sha256_dir(path: str | os.PathLike, pattern: str = "**/*") -> str:
    """Hex SHA-256 over the files of a directory matching ``pattern`` (a ``Path.glob`` pattern).

    Stable: files are taken in sorted order of their POSIX path relative to ``path``, and both the
    relative path and the file content enter the hash, so renaming, adding or removing a file
    changes it. Directories and symlinks to directories are skipped; an empty match hashes the
    empty list.
    """
    root = Path(path)
    if not root.is_dir():
        raise ArtifactError(f"{root}: not a directory; pass the project directory")
    files = sorted((p for p in root.glob(pattern) if p.is_file()), key=lambda p: p.relative_to(root).as_posix())
    h = hashlib.sha256()
    for p in files:
        rel = p.relative_to(root).as_posix()
        h.update(rel.encode("utf-8"))
        h.update(b"\0")
        h.update(sha256_file(p).encode("ascii"))
        h.update(b"\n")
    return h.hexdigest()


def _dist_version(name: str) -> str | None:
    for dist in _DIST_ALIASES.get(name, (name,)):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def package_versions(names: tuple[str, ...] | list[str] = DEFAULT_PACKAGES) -> dict[str, str | None]:
    """Installed versions of ``names`` from package metadata (nothing is imported); None if absent."""
    return {n: _dist_version(n) for n in names}


def _utc_now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def _to_jsonable(obj: Any) -> Any:
    """JSON-compatible copy: Paths → str, numpy scalars/arrays → Python, tuples → lists."""
    if isinstance(obj, Mapping):
        return {str(k): _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        seq = sorted(obj, key=str) if isinstance(obj, (set, frozenset)) else obj
        return [_to_jsonable(v) for v in seq]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return repr(obj)  # JSON has no inf/nan; keep them readable
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    tolist = getattr(obj, "tolist", None)  # numpy scalars and arrays
    if callable(tolist):
        return _to_jsonable(tolist())
    to_json = getattr(obj, "to_json", None)
    if callable(to_json):
        return _to_jsonable(to_json())
    return str(obj)


def _hash_input(path: Path) -> dict[str, str]:
    if path.is_dir():
        return {"path": str(path), "sha256": sha256_dir(path), "kind": "dir"}
    if path.is_file():
        return {"path": str(path), "sha256": sha256_file(path), "kind": "file"}
    raise ArtifactError(f"{path}: stage input does not exist; pass an existing file or directory")


def write_manifest(
    dir: str | os.PathLike,
    stage: str,
    inputs: Mapping[str, str | os.PathLike],
    config: Mapping[str, Any],
    figures: Mapping[str, Any],
    seed: int | None = None,
) -> dict[str, Any]:
    """Write ``<dir>/manifest.json`` (atomically) and return the manifest dict.

    ``inputs`` maps a role ("model", "data", ...) to a file or directory; each is recorded with its
    absolute path and SHA-256 so that :func:`read_manifest` can detect a changed input later.
    """
    d = Path(dir)
    if not d.is_dir():
        raise ArtifactError(f"{d}: output directory does not exist; create it before writing the manifest")
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "stage": str(stage),
        "created": _utc_now_iso(),
        "seed": seed,
        "inputs": {str(k): _hash_input(Path(v).resolve()) for k, v in inputs.items()},
        "config": _to_jsonable(dict(config)),
        "versions": package_versions(),
        "figures": _to_jsonable(dict(figures)),
    }
    text = json.dumps(manifest, indent=2, sort_keys=False) + "\n"
    target = d / MANIFEST_NAME
    tmp = d / f".{MANIFEST_NAME}.{uuid.uuid4().hex}.tmp"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, target)
    return manifest


def read_manifest(
    dir: str | os.PathLike, expect_stage: str | None = None, verify_inputs: bool = True
) -> dict[str, Any]:
    """Read and validate ``<dir>/manifest.json``.

    Raises ArtifactError (one line, naming the file and the fix) when the manifest is missing,
    unreadable or not a manifest, when its stage is not ``expect_stage``, or - with
    ``verify_inputs`` - when a recorded input no longer exists or its SHA-256 changed.
    """
    d = Path(dir)
    path = d / MANIFEST_NAME
    if not d.exists():
        raise ArtifactError(f"{d}: directory does not exist; run the stage that creates it first")
    if not path.is_file():
        raise ArtifactError(f"{path}: missing; this is not a finished stage output - re-run the stage (with --force)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ArtifactError(f"{path}: unreadable ({msg}); re-run the stage with --force to regenerate it") from None
    if not isinstance(manifest, dict) or "stage" not in manifest or not isinstance(manifest.get("inputs", {}), dict):
        raise ArtifactError(f"{path}: not a trigger_ml manifest; re-run the stage with --force to regenerate it")
    if expect_stage is not None and manifest["stage"] != expect_stage:
        raise ArtifactError(
            f"{path}: stage is {manifest['stage']!r}, expected {expect_stage!r}; pass the output directory of the "
            f"{expect_stage!r} stage"
        )
    if verify_inputs:
        for role, rec in manifest.get("inputs", {}).items():
            if not isinstance(rec, dict) or "path" not in rec or "sha256" not in rec:
                raise ArtifactError(f"{path}: input {role!r} has no path/sha256; re-run the stage with --force")
            p = Path(rec["path"])
            if not p.exists():
                raise ArtifactError(
                    f"{path}: input {role!r} ({p}) no longer exists; restore it or re-run the stage with --force"
                )
            actual = sha256_dir(p) if p.is_dir() else sha256_file(p)
            if actual != rec["sha256"]:
                raise ArtifactError(
                    f"{path}: input {role!r} ({p}) changed since this stage ran (sha256 {actual[:12]}… != recorded "
                    f"{str(rec['sha256'])[:12]}…); re-run the stage with --force"
                )
    return manifest


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Context manager yielding a fresh temporary directory next to ``target`` (same filesystem).

    On normal exit the temporary directory is renamed onto ``target``; an existing ``target`` is
    replaced only when ``force`` (otherwise ArtifactError "exists; pass --force", raised *before*
    anything is built). On an exception the temporary directory is removed, so no half-written
    output remains, and the exception propagates. With ``force`` the old target is moved aside
    first and deleted only after the new one is in place.
    """
    target = Path(target).absolute()
    if (target.exists() or target.is_symlink()) and not force:
        raise ArtifactError(f"{target}: exists; pass --force to overwrite it")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700; give the result the usual permissions
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        if target.exists() or target.is_symlink():
            if not force:
                raise ArtifactError(f"{target}: exists (created meanwhile); pass --force to overwrite it")
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(target, old)
            try:
                os.rename(tmp, target)
            except BaseException:
                os.rename(old, target)
                raise
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)
        else:
            os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike, force: bool = True, suffix: str | None = None) -> Iterator[Path]:
    """Context manager yielding a temporary sibling path of the file ``target``; rename onto it at the end.

    The caller writes the temporary path (any writer: h5py, pandas, ``open``); on normal exit it is
    renamed onto ``target`` in one step, on an exception it is removed and ``target`` is untouched.
    An existing ``target`` is replaced only when ``force``. The file gets the usual permissions
    (0666 & ~umask), not ``mkstemp``'s 0600. ``suffix`` (default: the target's) keeps writers that
    look at the extension happy.
    """
    target = Path(target).absolute()
    if target.exists() and not force:
        raise ArtifactError(f"{target}: exists; pass --force to overwrite it")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", suffix=target.suffix if suffix is None else suffix,
                                dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        tmp.chmod(0o666 & ~_umask())
        yield tmp
        if target.exists() and not force:
            raise ArtifactError(f"{target}: exists (created meanwhile); pass --force to overwrite it")
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(target: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``target`` atomically (temporary sibling + one rename), replacing it if present."""
    with atomic_file(target) as tmp:
        tmp.write_text(text)
    return Path(target)


def write_json_atomic(target: str | os.PathLike, obj: Any, indent: int | None = 1) -> Path:
    """JSON of ``obj`` (numpy scalars and paths converted) written atomically to ``target``."""
    return write_text_atomic(target, json.dumps(_to_jsonable(obj), indent=indent))


def read_json_or_none(path: str | os.PathLike) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when it is missing, unreadable or not an object
    (for optional side files such as measurements; a stage's own manifest goes through
    :func:`read_manifest`, which explains every problem)."""
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None
