"""Stage artifacts, the one home for: hashes, tool versions, ``manifest.json``, atomic outputs
(:func:`atomic_dir` for a directory, :func:`atomic_file` / :func:`write_text_atomic` for one file),
and the one output guard every stage calls before any work (:func:`check_output`).

Safety rules (issue "never lose a user's data"), enforced here for every stage:

* an output never equals, contains or lies inside one of the stage's inputs (symlinks resolved),
  with or without ``--force``;
* an existing output is replaced only with ``--force`` and only when it is an earlier output of the
  same stage (:func:`identify` reads its ``manifest.json`` / marker); anything else — another
  stage's output, a user's folder, a foreign file — is refused with a one-line message;
* outputs never create missing parent directories;
* temporaries (``.NAME.tmp-*``, and ``.NAME.old-*`` while an old output is swapped out) live only
  inside ``with atomic_dir/atomic_file`` blocks, which remove them when any exception propagates —
  including the KeyboardInterrupt / SIGTERM exception of the CLI; the few steps that must not be
  split by a signal (create-and-register a temporary, the final renames, the clean-up) run with
  SIGINT/SIGTERM deferred;
* files get the usual permissions (0666 & ~umask), directories 0777 & ~umask.

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
import signal
import tempfile
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from trigger_ml.core.constants import MANIFEST_FILE as MANIFEST_NAME
from trigger_ml.core.constants import RTL_MANIFEST_FILE
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
    write_text_atomic(d / MANIFEST_NAME, json.dumps(manifest, indent=2, sort_keys=False) + "\n")
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


# ============================================================================ signals


_DEFERRED = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Run the block with SIGINT/SIGTERM held back; a signal that arrived meanwhile is acted on at the end.

    For the few steps that a signal must not split: create a temporary *and* register its
    clean-up, swap an old output for the new one, remove a temporary. Python runs signal handlers
    in the main thread only, so elsewhere (and for handlers not installed from Python) this is a
    no-op. The held signal is then delivered as it would have been: the previous handler is
    called (KeyboardInterrupt, the CLI's SIGTERM exception), or with the default action the
    signal is re-sent.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    old: dict[int, Any] = {}

    def hold(signum: int, _frame: Any) -> None:
        pending.append(signum)

    try:
        for s in _DEFERRED:
            h = signal.getsignal(s)
            if h is None or h == signal.SIG_IGN:  # not installed from Python / ignored: leave it alone
                continue
            old[s] = h
            signal.signal(s, hold)
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if pending:
            s = pending[0]
            h = old.get(s)
            if callable(h):
                h(s, None)
            elif h == signal.SIG_DFL:
                os.kill(os.getpid(), s)


def _rm(path: Path) -> None:
    """Remove a temporary file or directory (signals deferred: a clean-up is never half done)."""
    with signals_deferred():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()


# ============================================================================ what an output holds

#: stage name → how a message names its output
STAGE_TEXT: dict[str, str] = {
    "data.generate": "an events file written by `trigger-ml data generate`",
    "events": "an events file written by trigger_ml",
    "train": "a training run (`trigger-ml train`)",
    "firmware.hls": "an hls4ml firmware project (`trigger-ml convert`)",
    "firmware.rtl": "an RTL firmware project (`trigger-ml convert --flavor verilog/vhdl`)",
    "emulate.catalog": "an event catalog (`trigger-ml emulate --catalog`)",
    "report": "a report (`trigger-ml report`)",
    "scan": "a scan directory (`trigger-ml scan`)",
    "demo": "a demo output (`trigger-ml demo`)",
    "verify": "a verification report (`trigger-ml verify --report`)",
}
#: HDF5 attribute naming the stage that wrote an events file (:class:`trigger_ml.data.adc2021.EventsWriter`)
H5_STAGE_ATTR = "trigger_ml_stage"


def _stage_text(stage: str) -> str:
    return STAGE_TEXT.get(stage, f"an output of the trigger_ml stage {stage!r}")


def _json_obj(path: Path) -> dict[str, Any] | None:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def _identify_dir(p: Path) -> tuple[str | None, str]:
    try:
        entries = sorted(e.name for e in p.iterdir())
    except OSError as e:
        return None, f"a directory that cannot be read ({e.strerror or type(e).__name__})"
    if not entries:
        return "", "an empty directory"
    man = _json_obj(p / MANIFEST_NAME) if (p / MANIFEST_NAME).is_file() else None
    if man is not None and isinstance(man.get("stage"), str):
        return man["stage"], _stage_text(man["stage"])
    rtl = _json_obj(p / RTL_MANIFEST_FILE) if (p / RTL_MANIFEST_FILE).is_file() else None
    if rtl is not None and (str(rtl.get("generator", "")).startswith("trigger_ml") or "latency_cycles" in rtl):
        return "firmware.rtl", _stage_text("firmware.rtl")
    rep = _json_obj(p / "report.json") if (p / "report.json").is_file() else None
    if rep is not None and rep.get("format") == "trigger_ml.report":
        return "report", _stage_text("report")
    if any((p / f).is_file() for f in ("results.parquet", "results.csv", "pareto.json")) or (p / "points").is_dir():
        return "scan", _stage_text("scan")
    met = _json_obj(p / "metrics.json") if (p / "metrics.json").is_file() else None
    if met is not None and "timings_s" in met and ((p / "runs").is_dir() or (p / "firmware").is_dir()):
        return "demo", _stage_text("demo")  # written before demos carried a manifest
    shown = ", ".join(repr(e) for e in entries[:3]) + (", ..." if len(entries) > 3 else "")
    return None, f"a directory that is not a trigger_ml output ({len(entries)} {'entry' if len(entries) == 1 else 'entries'}: {shown})"


def _identify_file(p: Path) -> tuple[str | None, str]:
    try:
        with open(p, "rb") as f:
            head = f.read(8)
    except OSError as e:
        return None, f"a file that cannot be read ({e.strerror or type(e).__name__})"
    if head == b"\x89HDF\r\n\x1a\n":
        try:
            import h5py

            with h5py.File(p, "r") as f:
                attrs = dict(f.attrs)
        except Exception:  # noqa: BLE001 - any unreadable HDF5 is simply "not ours"
            attrs = {}
        stage = attrs.get(H5_STAGE_ATTR)
        if isinstance(stage, bytes):
            stage = stage.decode(errors="replace")
        if isinstance(stage, str):
            return stage, _stage_text(stage)
        if str(attrs.get("generator", "")).startswith("trigger_ml.synth"):  # written before the stage attribute
            return "data.generate", _stage_text("data.generate")
        if "working_points" in attrs and "score_lsb" in attrs:
            return "emulate.catalog", _stage_text("emulate.catalog")
        return None, "an HDF5 file not written by trigger_ml"
    if p.suffix == ".json":
        d = _json_obj(p)
        if d is not None and isinstance(d.get("stage"), str):
            return d["stage"], _stage_text(d["stage"])
    return None, f"a file not written by trigger_ml ({p.stat().st_size:,} bytes)"


def identify(path: str | os.PathLike) -> tuple[str | None, str]:
    """(stage, description) of what ``path`` holds: the stage that wrote it (``""`` for an empty
    directory, None when it is not a trigger_ml output) and a few words for messages.

    Directories: ``manifest.json`` ``"stage"``; RTL projects ``rtl_manifest.json``; reports
    ``report.json`` (``format``); scans their results table; demos (older ones) ``metrics.json``.
    Files: events files their HDF5 attribute ``trigger_ml_stage``; JSON outputs a ``"stage"`` key.
    """
    p = Path(path)
    if p.is_dir():
        return _identify_dir(p)
    if p.is_file():
        return _identify_file(p)
    if p.is_symlink():
        return None, "a dangling symbolic link"
    if p.exists():
        return None, "a special file (not a regular file or directory)"
    return None, "nothing"


def _stages(stage: str | Sequence[str]) -> tuple[str, ...]:
    return (stage,) if isinstance(stage, str) else tuple(stage)


def _refuse_foreign(target: Path, stage: str | Sequence[str], kind: str) -> None:
    """ArtifactError unless the existing ``target`` is an earlier output of ``stage`` (or an empty directory)."""
    stages = _stages(stage)
    held, desc = identify(target)
    if kind == "file" and target.is_dir():
        raise ArtifactError(f"{target}: is a directory ({desc}); pass a file path as the output")
    if held in stages or (held == "" and kind == "dir"):
        return
    raise ArtifactError(f"{target}: exists and holds {desc}, not {_stage_text(stages[0])}; --force only replaces "
                        f"an earlier output of the same stage - choose another output path or move it away yourself")


def _check_parent(target: Path, parents: bool) -> None:
    parent = target.parent
    if parents:
        parent.mkdir(parents=True, exist_ok=True)
        return
    if not parent.is_dir():
        what = "is not a directory" if parent.exists() else "does not exist"
        raise ArtifactError(f"{target}: parent directory {parent} {what}; create it first "
                            "(outputs never create missing parent directories)")


def check_output(
    out: str | os.PathLike,
    inputs: Sequence[str | os.PathLike | None],
    stage: str | Sequence[str],
    force: bool,
    *,
    kind: str = "dir",
    reuse: bool = False,
) -> Path:
    """The one output guard; every stage calls it before any work. Returns ``out`` as an absolute path.

    Refuses (one-line :class:`ArtifactError` naming the path, what it holds and the fix):

    * ``out`` equal to, containing or inside any of ``inputs`` (symlinks resolved; None entries are
      skipped) - with or without ``force``;
    * a missing parent directory of ``out`` (outputs never create it);
    * an existing ``out`` without ``force`` ("exists; pass --force"), or - even with ``force`` -
      one that is not an earlier output of ``stage`` (one stage name or several, e.g. the two
      firmware flavours of convert), per :func:`identify`. An empty directory counts as
      replaceable for directory outputs.

    ``kind``: ``"dir"`` or ``"file"``. ``reuse``: the stage resumes in an existing output of its own
    (scan): then an existing same-stage output (or empty directory) is accepted without ``force``
    and never deleted.
    """
    if kind not in ("dir", "file"):
        raise ValueError(f"kind must be 'dir' or 'file', got {kind!r}")
    target = Path(out).absolute()
    real = target.resolve()
    for inp in inputs:
        if inp is None:
            continue
        ip = Path(inp).absolute()
        ir = ip.resolve()
        if real == ir or target == ip:
            raise ArtifactError(f"{target}: is an input of this stage ({ip}); choose another output path "
                                "(a stage never writes over its own input, not even with --force)")
        if ir.is_relative_to(real) or ip.is_relative_to(target):
            raise ArtifactError(f"{target}: contains the input {ip}; choose an output path outside the inputs")
        if real.is_relative_to(ir) or target.is_relative_to(ip):
            raise ArtifactError(f"{target}: lies inside the input {ip}; choose an output path outside it")
    _check_parent(target, parents=False)
    if target.exists() or target.is_symlink():
        _refuse_foreign(target, stage, kind)  # with or without force: only an earlier output of this stage
        if not force and not reuse:
            raise ArtifactError(f"{target}: exists; pass --force to replace it (it holds {identify(target)[1]})")
    return target


def clean_stale_temporaries(directory: str | os.PathLike) -> list[str]:
    """Remove what an earlier *killed* process (SIGKILL, a Dask worker torn down) left directly in
    ``directory``: ``.NAME.tmp-*`` temporaries are deleted; a ``.NAME.old-*`` whose ``NAME`` is
    missing is renamed back (the swap was cut short), otherwise deleted. For directories owned by
    one process at a time (a scan point's work directory). Returns the names handled."""
    d = Path(directory)
    done = []
    for p in sorted(d.glob(".*")):
        name, tmp_sep, _ = p.name[1:].rpartition(".tmp-")
        old_name, old_sep, _ = p.name[1:].rpartition(".old-")
        if tmp_sep and name:
            _rm(p)
        elif old_sep and old_name:
            with signals_deferred():
                if not (d / old_name).exists():
                    os.rename(p, d / old_name)
                else:
                    _rm(p)
        else:
            continue
        done.append(p.name)
    return done


def make_output_dir(path: str | os.PathLike) -> Path:
    """Create the directory ``path`` (not its parents; an existing directory is fine)."""
    p = Path(path).absolute()
    _check_parent(p, parents=False)
    if (p.exists() or p.is_symlink()) and not p.is_dir():
        raise ArtifactError(f"{p}: exists and holds {identify(p)[1]}, not a directory; choose another output path")
    p.mkdir(exist_ok=True)
    return p


# ============================================================================ atomic outputs


@contextlib.contextmanager
def atomic_dir(
    target: str | os.PathLike, force: bool = False, *, stage: str | Sequence[str] | None = None, parents: bool = False
) -> Iterator[Path]:
    """Context manager yielding a fresh temporary directory next to ``target`` (same filesystem).

    On normal exit the temporary directory is renamed onto ``target``; an existing ``target`` is
    replaced only when ``force`` (otherwise ArtifactError "exists; pass --force", raised *before*
    anything is built) and, when ``stage`` is given, only if it is an earlier output of that stage
    (checked again at the swap). On any exception - KeyboardInterrupt and the CLI's SIGTERM
    exception included - the temporary directory is removed, so no half-written output remains,
    and the exception propagates. With ``force`` the old target is moved aside first and deleted
    only after the new one is in place. A missing parent directory is refused unless ``parents``
    (caches).
    """
    target = Path(target).absolute()
    if (target.exists() or target.is_symlink()) and not force:
        raise ArtifactError(f"{target}: exists; pass --force to overwrite it")
    _check_parent(target, parents)
    tmp: Path | None = None
    try:
        with signals_deferred():
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700; give the result the usual permissions
        yield tmp
        with signals_deferred():
            if target.exists() or target.is_symlink():
                if not force:
                    raise ArtifactError(f"{target}: exists (created meanwhile); pass --force to overwrite it")
                if stage is not None:
                    _refuse_foreign(target, stage, "dir")
                old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
                os.rename(target, old)
                try:
                    os.rename(tmp, target)
                except BaseException:
                    os.rename(old, target)
                    raise
                _rm(old)
            else:
                os.rename(tmp, target)
    except BaseException:
        if tmp is not None and (tmp.exists() or tmp.is_symlink()):
            _rm(tmp)
        raise


@contextlib.contextmanager
def replace_dir_in_place(
    target: str | os.PathLike, force: bool = False, *, stage: str | Sequence[str] | None = None
) -> Iterator[Path]:
    """Like :func:`atomic_dir`, for an output that must be built at its final path (it records absolute
    paths of its own files, e.g. the demo): yields ``target`` itself, freshly created.

    An existing ``target`` (only with ``force``; with ``stage``, only an earlier output of that
    stage) is moved aside to ``.NAME.old-*`` first and deleted when the block succeeds; on any
    exception (signals included) the partial ``target`` is removed and the old one moved back.
    """
    target = Path(target).absolute()
    if (target.exists() or target.is_symlink()) and not force:
        raise ArtifactError(f"{target}: exists; pass --force to overwrite it")
    _check_parent(target, parents=False)
    old: Path | None = None
    created = False
    try:
        with signals_deferred():
            if target.exists() or target.is_symlink():
                if stage is not None:
                    _refuse_foreign(target, stage, "dir")
                old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
                os.rename(target, old)
            target.mkdir()
            created = True
        yield target
        if old is not None:
            _rm(old)
    except BaseException:
        with signals_deferred():
            if created:
                shutil.rmtree(target, ignore_errors=True)
            if old is not None and (old.exists() or old.is_symlink()) and not target.exists():
                os.rename(old, target)
        raise


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


@contextlib.contextmanager
def atomic_file(
    target: str | os.PathLike, force: bool = True, suffix: str | None = None, *,
    stage: str | Sequence[str] | None = None, parents: bool = False,
) -> Iterator[Path]:
    """Context manager yielding a temporary sibling path of the file ``target``; rename onto it at the end.

    The caller writes the temporary path (any writer: h5py, pandas, ``open``); on normal exit it is
    renamed onto ``target`` in one step, on an exception (signals included) it is removed and
    ``target`` is untouched. An existing ``target`` is replaced only when ``force`` (and, with
    ``stage``, only if :func:`identify` says that stage wrote it). The file gets the usual
    permissions (0666 & ~umask), not ``mkstemp``'s 0600. ``suffix`` (default: the target's) keeps
    writers that look at the extension happy. A missing parent directory is refused unless
    ``parents`` (caches).
    """
    target = Path(target).absolute()
    if target.exists() and not force:
        raise ArtifactError(f"{target}: exists; pass --force to overwrite it")
    _check_parent(target, parents)
    tmp: Path | None = None
    try:
        with signals_deferred():
            fd, name = tempfile.mkstemp(prefix=f".{target.name}.tmp-",
                                        suffix=target.suffix if suffix is None else suffix, dir=target.parent)
            tmp = Path(name)
            os.close(fd)
        tmp.chmod(0o666 & ~_umask())
        yield tmp
        with signals_deferred():
            if target.exists():
                if not force:
                    raise ArtifactError(f"{target}: exists (created meanwhile); pass --force to overwrite it")
                if stage is not None:
                    _refuse_foreign(target, stage, "file")
            os.replace(tmp, target)
    except BaseException:
        if tmp is not None:
            _rm(tmp)
        raise


def write_text_atomic(target: str | os.PathLike, text: str, *, parents: bool = False) -> Path:
    """Write ``text`` to ``target`` atomically (temporary sibling + one rename), replacing it if present."""
    with atomic_file(target, parents=parents) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


def write_json_atomic(target: str | os.PathLike, obj: Any, indent: int | None = 1, *, parents: bool = False) -> Path:
    """JSON of ``obj`` (numpy scalars and paths converted) written atomically to ``target``."""
    return write_text_atomic(target, json.dumps(_to_jsonable(obj), indent=indent), parents=parents)


def read_json_or_none(path: str | os.PathLike) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when it is missing, unreadable or not an object
    (for optional side files such as measurements; a stage's own manifest goes through
    :func:`read_manifest`, which explains every problem)."""
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None
