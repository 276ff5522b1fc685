"""Which files a data path names: a file, a directory walked recursively, or a glob.

Files come in a fixed order (sorted by path parts) with names relative to the directory, or to the
fixed part of a glob, so that ``corpus`` and ``corpus/**/*.txt`` give the same names wherever they
are run from. Symbolic links are followed, but each directory is entered once (a link back to an
ancestor costs nothing) and each file is read once; hidden files and directories are left out.
"""

from __future__ import annotations

import glob
import itertools
import os
import warnings
from collections.abc import Sequence
from fnmatch import fnmatch, fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING

from scratchllm.errors import DataError

if TYPE_CHECKING:
    from scratchllm.data.sources import SourceOptions


def _is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def resolve_files(path: str | Path, options: SourceOptions) -> list[tuple[Path, str]]:
    """Files to read with their document names, sorted; a DataError when nothing is there.

    Directories are walked recursively, following symbolic links to directories (a link back to
    an ancestor is not walked twice); files and directories whose names start with "." are left
    out, as ``glob`` does. A file reached twice (through a link, or a hard link) is read once,
    with a warning. Names are relative to the directory, or to the fixed part of a glob, so that
    ``corpus`` and ``corpus/**/*.txt`` give the same names wherever they are run from.
    """
    text = str(path)
    if _is_glob(text) and not Path(text).exists():
        files = [(f, n) for f, n in _glob_files(text) if not _matches(n, options.exclude)]
        if not files:
            raise DataError(f"no files match {text}")
        return _unique(files)
    root = Path(path)
    if root.is_file():
        return [(root, root.name)]
    if not root.exists():
        raise DataError(f"data path not found: {root}")
    files = []
    for rel in _walk(root):
        if _matches(rel, options.include) and not _matches(rel, options.exclude):
            files.append((root / rel, rel))
    if not files:
        raise DataError(f"no files in {root} match {', '.join(options.include)}")
    return _unique(files)


def _glob_base(pattern: str) -> Path:
    """The directory part of a glob before its first wildcard (``a/b/**/*.txt`` -> ``a/b``)."""
    parts = Path(pattern).parts
    fixed = [p for p in itertools.takewhile(lambda part: not _is_glob(part), parts)]
    return Path(*fixed) if fixed else Path(".")


def _glob_files(pattern: str) -> list[tuple[Path, str]]:
    """Files ``pattern`` matches with their names (``_relative`` to its fixed part), sorted.

    A pattern with a ``**`` part is matched against ``_walk`` of its fixed part, which enters
    each directory once: ``glob`` follows a link back to an ancestor until the path is too
    long for the OS, and with two such links takes 2**40 steps (it never ends). Without ``**``
    the depth is fixed and ``glob`` is used.
    """
    base = _glob_base(pattern)
    parts = Path(pattern).parts
    if "**" not in parts:
        found = sorted(glob.glob(pattern), key=lambda p: Path(p).parts)
        return [(Path(p), _relative(Path(p), base)) for p in found if Path(p).is_file()]
    rest = parts[len(base.parts) :]
    if not base.is_dir():
        return []
    return [(base / rel, rel) for rel in _walk(base) if _glob_match(rest, rel.split("/"))]


def _glob_match(pattern: Sequence[str], parts: Sequence[str]) -> bool:
    """Whether path ``parts`` match glob ``pattern`` parts: ``**`` matches any number of
    directories (none too), other parts one name each (``fnmatchcase``, as ``glob`` on POSIX)."""
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_glob_match(pattern[1:], parts[i:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatchcase(parts[0], pattern[0]) and _glob_match(pattern[1:], parts[1:])


def _relative(file: Path, base: Path) -> str:
    try:
        return file.relative_to(base).as_posix()
    except ValueError:  # a pattern such as ``../x*/a.txt``: keep the path as matched
        return file.as_posix()


def _walk(root: Path) -> list[str]:
    """Relative paths of the non-hidden files under ``root``, in sorted order of their parts.

    Depth first in sorted order, following links; a directory already entered (a link back to
    an ancestor, or a second link to one) is not listed again, so the first path to it wins."""
    found: list[str] = []
    seen_dirs: set[tuple[int, int]] = set()
    todo = [(str(root), "")]  # (directory, its path relative to root), last one next
    while todo:
        top, rel = todo.pop()
        key = _dir_key(top)
        if key is None or key in seen_dirs:
            continue
        seen_dirs.add(key)
        try:
            with os.scandir(top) as it:
                entries = sorted((e for e in it if not e.name.startswith(".")), key=_name)
        except OSError:  # unreadable: left out, as os.walk leaves it out
            continue
        subdirs = []
        for entry in entries:
            path = f"{rel}{entry.name}"
            if _is_dir(entry):
                subdirs.append((entry.path, path + "/"))
            elif _is_file(entry):
                found.append(path)
        todo.extend(reversed(subdirs))
    return sorted(found, key=lambda rel: rel.split("/"))


def _name(entry: os.DirEntry) -> str:
    return entry.name


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows a link
    except OSError:
        return False


def _is_file(entry: os.DirEntry) -> bool:
    try:
        return entry.is_file()
    except OSError:
        return False


def _dir_key(path: str) -> tuple[int, int] | None:
    """(device, inode) of a directory, following links; None when it cannot be reached."""
    try:
        st = os.stat(path)
    except OSError:  # a broken link, or removed since it was listed
        return None
    return st.st_dev, st.st_ino


def _unique(files: list[tuple[Path, str]]) -> list[tuple[Path, str]]:
    """``files`` (sorted) with each file (device and inode) once, under its shortest name: a glob
    through a symlink loop reaches ``a.txt`` as ``loop/loop/.../a.txt`` too."""
    best: dict[tuple[int, int], tuple[Path, str]] = {}
    for file, name in files:
        key = _inode(file)
        if key not in best or name.count("/") < best[key][1].count("/"):
            best[key] = (file, name)
    kept = {name for _, name in best.values()}
    dropped = [
        f"{name} (same file as {best[_inode(file)][1]})" for file, name in files if name not in kept
    ]
    if dropped:
        warnings.warn(
            f"read once: {len(dropped)} path(s) to files already read: {', '.join(dropped[:3])}"
            + (" ..." if len(dropped) > 3 else ""),
            stacklevel=3,
        )
    return [(file, name) for file, name in files if name in kept]


def _inode(file: Path) -> tuple[int, int]:
    st = file.stat()
    return st.st_dev, st.st_ino


def _matches(rel: str, patterns: Sequence[str]) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return any(fnmatch(name, p) or fnmatch(rel, p) for p in patterns)
