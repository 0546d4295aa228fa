"""The mirror on disk, touched only through folder handles opened without following links.

Every folder below `mirror_dir` is reached by opening its components one by one from the
mirror root with `O_NOFOLLOW | O_DIRECTORY`, and every create, rename, delete, stat and read
is done relative to such a handle (`dir_fd`), so the handle that was checked is the handle
that is used: no window between a check and its use. Whatever another process plants in the
mirror, nothing outside `mirror_dir` is written, renamed or deleted:

- a symbolic link met where a folder or file of ours should be is never followed and never
  deleted: it is renamed aside to `name (link set aside <date>).ext` in the same folder, a
  `mirror.link_set_aside` warning names both, and a real folder or file takes its place;
- anything else that is not a folder where one of ours should be (a file, a FIFO) is kept
  the same way as a local copy, `name (local copy <date>).ext`;
- files are opened for reading with `O_NOFOLLOW | O_NONBLOCK` and must be regular files.

The mirror root itself is the configured `mirror_dir`; it may be a link (a mount point the
operator chose): only what lies below it is distrusted.

`.sync-agent/staging` is opened once and kept open for the life of the agent, mode 0700.
Code that needs a path for it (the downloader) gets `/proc/self/fd/N`, which the kernel
resolves to that open folder itself, never through the names above it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, ParamSpec, TypeVar

from agent.errors import MirrorError
from agent.log import get_logger
from agent.transfer import digests

FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
STAGING = (".sync-agent", "staging")
LINK_LABEL = "link set aside"
COPY_LABEL = "local copy"
P = ParamSpec("P")
T = TypeVar("T")


async def off_loop(work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run mirror work in a thread; the operating system's refusals become `MirrorError`."""
    try:
        return await asyncio.to_thread(work, *args, **kwargs)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise MirrorError(f"the mirror cannot be used: {exc.strerror or exc}{where}") from exc


class Folder:
    """An open folder of the mirror. Names given to its methods are single components."""

    def __init__(self, fd: int, rel: str) -> None:
        self.fd = fd
        self.rel = rel  # relative to the mirror root ("" for the root), for messages

    def __enter__(self) -> Folder:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    @property
    def path(self) -> Path:
        """A path that reaches this very folder, whatever happens to the names above it."""
        return Path(f"/proc/self/fd/{self.fd}")

    def child_rel(self, name: str) -> str:
        return f"{self.rel}/{name}" if self.rel else name

    # ------------------------------------------------------------ looking

    def lstat(self, name: str) -> os.stat_result | None:
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def absent(self, names: Iterable[str]) -> list[str]:
        """The names with no regular file here (a link or a folder does not count): one
        lstat each, in a loop that does nothing else (a re-poll checks every file)."""
        fd, missing = self.fd, []
        for name in names:
            try:
                mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
            except FileNotFoundError:
                missing.append(name)
                continue
            if not stat.S_ISREG(mode):
                missing.append(name)
        return missing

    def scandir(self) -> Iterator[os.DirEntry[str]]:
        """The folder's entries; `is_file(follow_symlinks=False)` costs no extra call."""
        with os.scandir(self.fd) as entries:
            yield from entries

    def open_read(self, name: str) -> BinaryIO | None:
        """The regular file `name`, opened for reading; None when there is no such file.

        A link or anything else (a FIFO, a folder) is None too: it is not a file of ours.
        """
        try:
            fd = os.open(name, READ_FLAGS, dir_fd=self.fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR):
                return None
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return None
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")

    def digest(self, name: str, algorithm: digests.Algorithm) -> tuple[str, os.stat_result] | None:
        """(recorded digest `<algorithm>:<hex>`, stat) of the regular file `name`, or None
        when there is none."""
        handle = self.open_read(name)
        if handle is None:
            return None
        with handle:
            before = os.fstat(handle.fileno())
            hasher = digests.new(algorithm)
            while block := handle.read(digests.HASH_BLOCK):
                hasher.update(block)
        return digests.value(algorithm, hasher), before

    # ------------------------------------------------------------ changing

    def set_aside(self, name: str, label: str = COPY_LABEL) -> str:
        """Rename `name` to an unused `name (<label> <date>).ext` here; returns the new name."""
        stamp = time.strftime("%Y-%m-%d %H%M%S")
        stem, ext = os.path.splitext(name)
        for n in range(1, 1000):
            suffix = f" ({label} {stamp})" if n == 1 else f" ({label} {stamp} {n})"
            aside = _fitting(stem, suffix + ext)
            if self.lstat(aside) is None:
                os.rename(name, aside, src_dir_fd=self.fd, dst_dir_fd=self.fd)
                if label == LINK_LABEL:
                    get_logger().warning(
                        "mirror.link_set_aside",
                        path=self.child_rel(name),
                        kept_as=self.child_rel(aside),
                    )
                return aside
        raise FileExistsError(errno.EEXIST, "no free name to set a file aside", name)

    def clear_link(self, name: str) -> None:
        """Set aside a link found at `name`, so that a file of ours can take the name."""
        found = self.lstat(name)
        if found is not None and stat.S_ISLNK(found.st_mode):
            self.set_aside(name, LINK_LABEL)

    def move_in(self, source: Folder, source_name: str, name: str) -> None:
        """Rename `source_name` of `source` to `name` here (a link at `name` is set aside)."""
        self.clear_link(name)
        os.replace(source_name, name, src_dir_fd=source.fd, dst_dir_fd=self.fd)

    def unlink(self, name: str) -> bool:
        """Delete the regular file `name`; True when it did.

        A link there is set aside instead; anything else (a folder) is left alone.
        """
        found = self.lstat(name)
        if found is None:
            return False
        if stat.S_ISLNK(found.st_mode):
            self.set_aside(name, LINK_LABEL)
        if not stat.S_ISREG(found.st_mode):
            return False
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=self.fd)
        return True

    def remove_if_empty(self, name: str) -> None:
        """Remove the sub-folder `name` when it is empty (a link is left alone)."""
        with contextlib.suppress(OSError):
            os.rmdir(name, dir_fd=self.fd)

    def set_mtime(self, name: str, mtime_ns: int) -> None:
        os.utime(name, ns=(time.time_ns(), mtime_ns), dir_fd=self.fd, follow_symlinks=False)

    def fsync(self) -> None:
        os.fsync(self.fd)

    def write_atomic(self, name: str, data: bytes, staging: Folder) -> None:
        """Write small content (a metadata sidecar) to a fsynced temp file, rename it here."""
        temp = f"write-{os.getpid()}-{time.monotonic_ns()}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(temp, flags, 0o644, dir_fd=staging.fd)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        self.move_in(staging, temp, name)

    # ------------------------------------------------------------ sub-folders

    def child(self, name: str, *, create: bool, repair: bool = True) -> Folder | None:
        """The sub-folder `name`, opened without following a link.

        With `repair`, a link or a non-folder found there is set aside (then, with `create`,
        a real folder is made); without, such a name counts as absent. None when absent.
        """
        try:
            return Folder(os.open(name, FOLDER_FLAGS, dir_fd=self.fd), self.child_rel(name))
        except FileNotFoundError:
            pass
        except NotADirectoryError:
            found = self.lstat(name)
            if not repair or found is None:
                return None
            if stat.S_ISLNK(found.st_mode):
                self.set_aside(name, LINK_LABEL)
            else:
                kept = self.set_aside(name)
                get_logger().warning(
                    "mirror.file_set_aside", path=self.child_rel(name), kept_as=self.child_rel(kept)
                )
        if not create:
            return None
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, dir_fd=self.fd)
        return Folder(os.open(name, FOLDER_FLAGS, dir_fd=self.fd), self.child_rel(name))


class MirrorFS:
    """Opens folders of one mirror by relative path, walking from its root."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def open_root(self, *, create: bool) -> Folder | None:
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
        try:
            return Folder(os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), "")
        except FileNotFoundError:
            return None

    def folder(self, rel: str, *, create: bool = False, repair: bool = True) -> Folder | None:
        """The folder at the relative POSIX path `rel` ("" is the root); see `Folder.child`."""
        parts = [p for p in rel.split("/") if p]
        if "." in parts or ".." in parts:
            raise ValueError(f"not a mirror path: {rel!r}")
        current = self.open_root(create=create)
        for part in parts:
            if current is None:
                break
            with current:
                current = current.child(part, create=create, repair=repair)
        return current

    def make_folder(self, rel: str) -> Folder:
        """The folder at `rel`, made (and cleared of links in the way) when needed."""
        folder = self.folder(rel, create=True)
        if folder is None:  # only when the root itself vanished under us
            raise FileNotFoundError(errno.ENOENT, "the mirror folder is missing", str(self.root))
        return folder

    def parent(self, rel_path: str, *, repair: bool = True) -> Folder | None:
        """The folder holding the file at `rel_path`, when it exists."""
        return self.folder(rel_path.rpartition("/")[0], repair=repair)

    def open_staging(self) -> Folder:
        """The staging folder (created, mode 0700), to be kept open and closed by the caller."""
        folder = self.make_folder("/".join(STAGING))
        with contextlib.suppress(PermissionError):  # made by another user: leave its mode be
            os.fchmod(folder.fd, 0o700)
        return folder


def _fitting(stem: str, tail: str, limit: int = 255) -> str:
    """`stem + tail`, the stem cut short enough for a file name of at most `limit` bytes."""
    room = limit - len(os.fsencode(tail))
    return os.fsdecode(os.fsencode(stem)[:room]) + tail
