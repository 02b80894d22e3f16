"""A FUSE filesystem that loses what was never synced, the way a power cut does.

    python powerfs.py BACKING MOUNTPOINT

Files live in the folder BACKING; MOUNTPOINT shows them. Metadata changes (create,
unlink, rename, mkdir, chmod) reach BACKING at once, as on a journalling
filesystem. File *contents* do not: every write and truncate goes to an image of the
file held in this process's memory, and reaches BACKING only when the file is
fsync'ed (``fsync``/``fdatasync``; SQLite calls them at the points it documents as
durable). Kill this process with SIGKILL — the test's "power cut" — and every
unsynced byte is gone, as RAM is at a power loss; mount BACKING again and a program
sees exactly what was synced.

This is what LazyFS (Jepsen) does for its "clear cache" fault, cut down to what
meshdesk's durability tests need. Its own tests prove it can fail: SQLite in WAL mode
with ``synchronous = NORMAL`` (no fsync at commit) loses committed rows on it, and
keeps them with ``FULL``.

Run by the tests as a child process (mfusepy over libfuse 3, single-threaded, in the
foreground); it prints ``ready`` once mounted is not reported by libfuse, so the test
waits for the mount to appear in /proc/self/mounts instead.
"""

from __future__ import annotations

import errno
import os
import sys
import threading
from typing import Any

import mfusepy as fuse

PAGE = 4096


class _Image:
    """A file's content as programs see it, and which pages differ from BACKING."""

    def __init__(self, data: bytearray) -> None:
        self.data = data
        self.dirty_pages: set[int] = set()
        self.resized = False

    def write(self, offset: int, chunk: bytes) -> None:
        end = offset + len(chunk)
        if end > len(self.data):
            self.data.extend(bytes(end - len(self.data)))
            self.resized = True
        self.data[offset:end] = chunk
        self.dirty_pages.update(range(offset // PAGE, (end - 1) // PAGE + 1))

    def truncate(self, length: int) -> None:
        if length < len(self.data):
            del self.data[length:]
        else:
            self.data.extend(bytes(length - len(self.data)))
        self.resized = True
        self.dirty_pages = {p for p in self.dirty_pages if p * PAGE < length}

    @property
    def dirty(self) -> bool:
        return bool(self.dirty_pages) or self.resized


class PowerLossFS(fuse.Operations):
    """Pass-through to BACKING, with unsynced file contents kept in memory only."""

    use_ns = True

    def __init__(self, backing: str) -> None:
        self._root = os.path.realpath(backing)
        self._images: dict[str, _Image] = {}
        self._fds: dict[int, int] = {}  # our handle -> fd of the BACKING file
        self._lock = threading.Lock()

    # -- helpers -----------------------------------------------------------------

    def _real(self, path: str) -> str:
        return os.path.join(self._root, path.lstrip("/"))

    def _image(self, path: str) -> _Image:
        image = self._images.get(path)
        if image is None:
            with open(self._real(path), "rb") as f:
                image = self._images[path] = _Image(bytearray(f.read()))
        return image

    def _sync(self, path: str) -> None:
        image = self._images.get(path)
        if image is None or not image.dirty:
            return
        fd = os.open(self._real(path), os.O_WRONLY)
        try:
            for page in sorted(image.dirty_pages):
                start = page * PAGE
                os.pwrite(fd, bytes(image.data[start : start + PAGE]), start)
            os.ftruncate(fd, len(image.data))
            os.fsync(fd)
        finally:
            os.close(fd)
        image.dirty_pages.clear()
        image.resized = False

    # -- metadata: straight to BACKING -------------------------------------------

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        with self._lock:
            st = os.lstat(self._real(path))
            attrs = {
                key: getattr(st, key)
                for key in (
                    "st_mode",
                    "st_nlink",
                    "st_uid",
                    "st_gid",
                    "st_size",
                    "st_atime_ns",
                    "st_mtime_ns",
                    "st_ctime_ns",
                )
            }
            for key in ("st_atime", "st_mtime", "st_ctime"):
                attrs[key] = attrs.pop(f"{key}_ns")
            image = self._images.get(path)
            if image is not None:
                attrs["st_size"] = len(image.data)
            return attrs

    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", *os.listdir(self._real(path))]

    def access(self, path: str, amode: int) -> int:
        if not os.access(self._real(path), amode):
            raise fuse.FuseOSError(errno.EACCES)
        return 0

    def chmod(self, path: str, mode: int) -> int:
        os.chmod(self._real(path), mode)
        return 0

    def chown(self, path: str, uid: int, gid: int) -> int:
        os.chown(self._real(path), uid, gid)
        return 0

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        os.utime(self._real(path), ns=times)
        return 0

    def mkdir(self, path: str, mode: int) -> int:
        os.mkdir(self._real(path), mode)
        return 0

    def rmdir(self, path: str) -> int:
        os.rmdir(self._real(path))
        return 0

    def unlink(self, path: str) -> int:
        with self._lock:
            os.unlink(self._real(path))
            self._images.pop(path, None)
        return 0

    def rename(self, old: str, new: str) -> int:
        with self._lock:
            self._sync(old)  # a rename publishes a file: model the usual write-then-rename
            os.rename(self._real(old), self._real(new))
            image = self._images.pop(old, None)
            self._images.pop(new, None)
            if image is not None:
                self._images[new] = image
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        st = os.statvfs(self._real(path))
        return {
            key: getattr(st, key)
            for key in (
                "f_bavail",
                "f_bfree",
                "f_blocks",
                "f_bsize",
                "f_favail",
                "f_ffree",
                "f_files",
                "f_flag",
                "f_frsize",
                "f_namemax",
            )
        }

    # -- contents: in memory until fsync -----------------------------------------

    def create(self, path: str, mode: int, fi: Any = None) -> int:
        with self._lock:
            fd = os.open(self._real(path), os.O_RDWR | os.O_CREAT, mode)
            return self._handle(fd)

    def open(self, path: str, flags: int) -> int:
        with self._lock:
            fd = os.open(self._real(path), os.O_RDWR if flags & os.O_ACCMODE else os.O_RDONLY)
            if flags & os.O_TRUNC:
                self._image(path).truncate(0)
            return self._handle(fd)

    def _handle(self, fd: int) -> int:
        handle = max(self._fds, default=0) + 1
        self._fds[handle] = fd
        return handle

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        with self._lock:
            image = self._images.get(path)
            if image is not None:
                return bytes(image.data[offset : offset + size])
            return os.pread(self._fds[fh], size, offset)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        with self._lock:
            self._image(path).write(offset, data)
            return len(data)

    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        with self._lock:
            self._image(path).truncate(length)
        return 0

    def fsync(self, path: str, datasync: int, fh: int) -> int:
        with self._lock:
            self._sync(path)
        return 0

    def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
        return 0  # metadata is durable at once here

    def flush(self, path: str, fh: int) -> int:
        return 0  # close() promises nothing about durability

    def release(self, path: str, fh: int) -> int:
        with self._lock:
            os.close(self._fds.pop(fh))
        return 0


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(f"usage: {argv[0]} BACKING MOUNTPOINT", file=sys.stderr)
        return 2
    backing, mountpoint = argv[1], argv[2]
    fuse.FUSE(PowerLossFS(backing), mountpoint, foreground=True, nothreads=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
