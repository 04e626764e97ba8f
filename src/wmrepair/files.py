"""Where a run may write: atomic writes, temp files of our own naming, overlap and writability checks.

The repair contract is that nothing a run writes lies inside its inputs, nor an
input inside anything it writes, and that a kill at any moment leaves each
output either absent or complete. Files are created with mode 0666 less the
umask (as `open()` does), never mkstemp's 0600: results on a shared filesystem
must be readable by the team.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import BinaryIO

TMP_DIR = ".wmrepair-tmp"  # a run's staging folder lives under <root>/.wmrepair-tmp/<host>-<pid>-<token>/
_HOST = socket.gethostname().replace("-", "_")
_OTHER_HOST_STALE_S = 24 * 3600  # a staging folder of another host is stale after a day (its pid is unknowable)


class PathError(ValueError):
    """A path a run would read or write is unsafe or unusable; the message is one line naming it."""


def _owner_tag() -> str:
    return f"{_HOST}-{os.getpid()}-{secrets.token_hex(4)}"


def _create(path: Path) -> int:
    """Open a new file for writing with mode 0666 & ~umask (O_EXCL: never someone else's file)."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)


def _tmp_beside(path: Path) -> Path:
    return path.with_name(f".{path.name}.wmrepair-{_owner_tag()}.tmp")


Writer = Callable[[BinaryIO], object]


def _write_then_replace(tmp: Path, path: Path, write: Writer) -> None:
    fd = _create(tmp)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)  # readers see the old file or the new one, never half
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _bytes(data: bytes) -> Writer:
    return lambda f: f.write(data)


def _copy_of(src: str | Path) -> Writer:
    def write(f: BinaryIO) -> None:
        with open(src, "rb") as fin:
            shutil.copyfileobj(fin, f, 1 << 20)
    return write


def atomic_write(path: str | Path, write: Writer) -> None:
    """Create `path` atomically: `write(file)` fills a uniquely named temp file beside it, then one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_then_replace(_tmp_beside(path), path, write)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write(path, _bytes(data))


def remove_stale_beside(path: str | Path) -> int:
    """Remove temp files of our naming left beside `path` by dead processes of this host."""
    path = Path(path)
    n = 0
    for p in path.parent.glob(f".{path.name}.wmrepair-*.tmp") if path.parent.is_dir() else ():
        owner = p.name[len(path.name) + len(".."):].removeprefix("wmrepair-").removesuffix(".tmp")
        if _is_stale(owner, p):
            p.unlink(missing_ok=True)
            n += 1
    return n


def _is_stale(owner: str, p: Path) -> bool:
    """`owner` is '<host>-<pid>-<token>': stale when its process is gone (this host) or it is old (others)."""
    import psutil

    parts = owner.rsplit("-", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return False  # not of our naming
    host, pid = parts[0], int(parts[1])
    if host == _HOST:
        return pid != os.getpid() and not psutil.pid_exists(pid)
    try:
        return time.time() - p.stat().st_mtime > _OTHER_HOST_STALE_S
    except FileNotFoundError:
        return False


class Staging:
    """Temp files for one run's writes under `root`, swept in O(1) instead of a walk of `root`.

    Outputs are written into `root/.wmrepair-tmp/<host>-<pid>-<token>/` and moved
    into place with one rename, so a killed run's leftovers are one folder per
    process, which the next run removes (`sweep`). A target on another
    filesystem than `root` (a mount point inside it) gets its temp file beside it.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.dir = self.root / TMP_DIR / _owner_tag()
        self._n = 0

    def sweep(self) -> int:
        """Remove staging folders of dead processes; returns how many."""
        base = self.root / TMP_DIR
        n = 0
        if base.is_dir():
            for d in base.iterdir():
                if d != self.dir and _is_stale(d.name, d):
                    shutil.rmtree(d, ignore_errors=True)
                    n += 1
        return n

    def _next(self) -> Path:
        for _ in range(3):  # another run may remove the empty parent between our mkdir calls
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
                break
            except FileNotFoundError:
                continue
        self._n += 1
        return self.dir / f"{self._n:08d}-{secrets.token_hex(3)}.tmp"

    def write(self, path: str | Path, write: Writer) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            _write_then_replace(self._next(), path, write)
        except OSError as exc:
            if exc.errno != errno.EXDEV:  # the target is on another filesystem than the staging folder
                raise
            atomic_write(path, write)

    def write_bytes(self, path: str | Path, data: bytes) -> None:
        self.write(path, _bytes(data))

    def copy(self, src: str | Path, path: str | Path) -> None:
        """`src` byte for byte at `path`."""
        self.write(path, _copy_of(src))

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        try:
            self.dir.parent.rmdir()  # only when no other run is staging here
        except OSError:
            pass


# ---- where a run may write -------------------------------------------------
def _real(p: str | Path) -> Path:
    return Path(os.path.abspath(os.path.expanduser(str(p)))).resolve()


def _within(a: Path, b: Path) -> bool:
    """a is b or lies inside it."""
    return a == b or b in a.parents


def check_no_overlap(inputs: Mapping[str, str | Path | None], outputs: Mapping[str, str | Path | None],
                     files: Iterable[str] = ()) -> None:
    """Refuse any overlap between what a run reads and what it writes, in both directions.

    `inputs` and `outputs` map a name the user knows (`--input`, `repair.input_dir`)
    to a path; None entries are ignored. An output named in `files` is a single
    file: only its lying inside an input counts. Symlinks are resolved.
    """
    files = set(files)
    for oname, opath in outputs.items():
        if opath is None:
            continue
        o = _real(opath)
        for iname, ipath in inputs.items():
            if ipath is None:
                continue
            i = _real(ipath)
            if _within(o, i) or (oname not in files and _within(i, o)):
                how = "is" if o == i else "lies inside" if _within(o, i) else "contains"
                raise PathError(f"{oname} {o} {how} {iname} {i}: a run never writes where it reads "
                                "(inputs are never overwritten); choose a separate folder")


_SYSTEM = tuple(Path(p) for p in ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/proc",
                                  "/sbin", "/sys", "/usr"))


def check_dedicated_dir(name: str, path: str | Path | None, cwd: str | Path | None = None) -> None:
    """A folder a run fills with its own files: not empty, not /, not a system folder, not the working folder or above it."""
    if path is None or not str(path).strip():
        raise PathError(f"{name} is empty: name a folder for the run's files, e.g. results")
    here = _real(cwd or os.getcwd())
    p = _real(here / os.path.expanduser(str(path)))  # relative to the working folder; an absolute path stays
    if p == Path(p.anchor) or any(_within(p, s) for s in _SYSTEM) or p == _real(Path.home()) or _within(here, p):
        raise PathError(f"{name}: {path} resolves to {p}, which is not a folder of its own "
                        "(the filesystem root, a system folder, your home or the working folder or above it)")


def ensure_writable_dir(name: str, path: str | Path) -> Path:
    """Create `path` if needed and prove it writable (a real probe: root ignores mode bits, read-only mounts do not)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise PathError(f"{name} {p} exists and is not a folder")
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / f".wmrepair-probe-{_owner_tag()}"
        os.close(_create(probe))
        probe.unlink()
    except OSError as exc:
        raise PathError(f"{name} {p} is not writable ({exc.strerror or exc})") from None
    return p


def ensure_writable_file(name: str, path: str | Path) -> Path:
    """`path` can be (re)written: not a folder, its folder writable."""
    p = Path(path)
    if p.is_dir():
        raise PathError(f"{name} {p} is a folder; name a file")
    ensure_writable_dir(f"the folder of {name}", p.parent)
    if p.exists() and not os.access(p, os.W_OK):
        raise PathError(f"{name} {p} is not writable")
    return p
