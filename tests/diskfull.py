"""A full disk, simulated inside the process: SQLite's own system calls fail with ENOSPC.

SQLite's unix VFS lets a program replace the system calls it makes ("write", "pwrite",
"ftruncate", ...). `DiskFull` replaces the ones that make files grow with ctypes callbacks that
pass through to libc until a byte budget for files under one directory is spent, and then fail
with ENOSPC, as a full file system does: the database, its -wal and its -shm (which SQLite grows
with ftruncate and writes), and any other file SQLite writes there (a backup's copy). Files
elsewhere are untouched. Nothing needs root or a special file system.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from pathlib import Path
from typing import Any

import apsw

_LIBC = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_SSIZE = ctypes.c_ssize_t
_OFF = ctypes.c_int64
_WRITE = ctypes.CFUNCTYPE(_SSIZE, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, use_errno=True)
_PWRITE = ctypes.CFUNCTYPE(_SSIZE, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, _OFF,
                           use_errno=True)
_FTRUNCATE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, _OFF, use_errno=True)
_FALLOCATE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, _OFF, _OFF, use_errno=True)


class DiskFull:
    """`with DiskFull(directory, budget=0):` files under `directory` cannot grow past `budget`
    more bytes (writes over existing bytes still succeed until then: SQLite rewrites pages)."""

    def __init__(self, directory: str | os.PathLike[str], budget: int = 0) -> None:
        self.directory = str(Path(directory).resolve())
        self.budget = budget
        self.failures = 0
        self._vfs: apsw.VFS | None = None
        self._callbacks: list[Any] = []

    def _watched(self, fd: int) -> bool:
        try:
            return os.readlink(f"/proc/self/fd/{fd}").startswith(self.directory + os.sep)
        except OSError:
            return False

    def _grows(self, fd: int, end: int) -> bool:
        """Whether a write or truncate that ends at `end` needs more room than is left."""
        if not self._watched(fd):
            return False
        try:
            size = os.fstat(fd).st_size
        except OSError:
            return False
        if end <= size:
            return False
        if end - size > self.budget:
            self.failures += 1
            return True
        self.budget -= end - size
        return False

    def _fail(self) -> int:
        ctypes.set_errno(errno.ENOSPC)
        return -1

    def _write(self, fd: int, buf: int, count: int) -> int:
        end = os.lseek(fd, 0, os.SEEK_CUR) + count if self._watched(fd) else 0
        if self._grows(fd, end):
            return self._fail()
        return _LIBC.write(fd, ctypes.c_void_p(buf), ctypes.c_size_t(count))

    def _pwrite(self, fd: int, buf: int, count: int, offset: int) -> int:
        if self._grows(fd, offset + count):
            return self._fail()
        return _LIBC.pwrite64(fd, ctypes.c_void_p(buf), ctypes.c_size_t(count), _OFF(offset))

    def _ftruncate(self, fd: int, length: int) -> int:
        if self._grows(fd, length):
            return self._fail()
        return _LIBC.ftruncate64(fd, _OFF(length))

    def _fallocate(self, fd: int, offset: int, length: int) -> int:
        if self._grows(fd, offset + length):
            return errno.ENOSPC  # posix_fallocate returns the error
        return _LIBC.posix_fallocate64(fd, _OFF(offset), _OFF(length))

    def __enter__(self) -> DiskFull:
        self._vfs = apsw.VFS("chatledger-test-diskfull", base="")
        calls = {"write": _WRITE(self._write), "pwrite": _PWRITE(self._pwrite),
                 "pwrite64": _PWRITE(self._pwrite), "ftruncate": _FTRUNCATE(self._ftruncate),
                 "fallocate": _FALLOCATE(self._fallocate)}
        for name, callback in calls.items():
            if self._vfs.xGetSystemCall(name):
                self._callbacks.append(callback)
                self._vfs.xSetSystemCall(name, ctypes.cast(callback, ctypes.c_void_p).value)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._vfs is not None
        self._vfs.xSetSystemCall(None, 0)  # every call back to its default
        self._vfs.unregister()
        self._vfs = None
