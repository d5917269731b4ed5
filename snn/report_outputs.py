"""Where snn.report writes: only files it wrote itself. Each folder it writes into keeps a record, RECORD, of the
SHA-256 of every file it wrote there; a file of one of its names that is not in that record (the user's own
results.md, or a report edited since) is refused, naming it, before anything is written."""

import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path

RECORD = ".snn-report.json"
NOTE = "the files python -m snn.report wrote in this folder, by SHA-256: it replaces only these"


class OutputError(ValueError):
    """A file in the way of the report: its message is one line naming it."""


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _read_record(folder: Path) -> dict[str, list[str]]:
    path = folder / RECORD
    if not os.path.lexists(path):
        return {}
    try:
        if not stat.S_ISREG(path.lstat().st_mode) or path.stat().st_size > 1 << 20:
            raise ValueError
        record = json.loads(path.read_text())
        hashes = record["sha256"]
        if record.get("note") != NOTE or not all(isinstance(h, list) for h in hashes.values()):
            raise ValueError
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        raise OutputError(f"{path}: not snn.report's record of its files; move it away or choose another --out")
    return hashes


def _write_atomically(path: Path, data: bytes) -> None:
    """A kill or a full disk leaves the previous file whole, never half of the new one."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # a new file: nobody else's
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.fchmod(fd, 0o666 & ~umask)  # as an ordinary new file, not mkstemp's owner-only
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)


def _save_record(folder: Path, hashes: dict[str, list[str]]) -> None:
    _write_atomically(folder / RECORD, (json.dumps({"note": NOTE, "sha256": hashes}, indent=1) + "\n").encode())


def write_owned(folder: Path, contents: dict[str, bytes]) -> None:
    """Write `contents` (file name -> bytes) into the folder, replacing only files recorded as written here."""
    hashes = _read_record(folder)
    current = {}
    for name in contents:
        path = folder / name
        if not os.path.lexists(path):
            continue
        if stat.S_ISREG(path.lstat().st_mode):  # not a link or a FIFO: those are never its own
            current[name] = _sha256(path)
        if current.get(name) not in hashes.get(name, []):
            raise OutputError(
                f"{path}: exists and was not written by snn.report (or was changed since); "
                "move it away or choose another --out"
            )
    new = {name: hashlib.sha256(data).hexdigest() for name, data in contents.items()}
    # Recorded before writing, next to what is there now: a run stopped half-way leaves only files it may replace.
    _save_record(folder, {**hashes, **{name: [*filter(None, [current.get(name)]), new[name]] for name in contents}})
    for name, data in contents.items():
        _write_atomically(folder / name, data)
    _save_record(folder, {**hashes, **{name: [new[name]] for name in contents}})
