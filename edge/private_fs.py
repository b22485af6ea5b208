"""Owner-only files and folders for what the edge keeps on disk (pictures, keys, the outbox).

Folders are 0700 and files 0600 whatever the process umask, so another user of the camera box
cannot list or read the stored frames. Existing paths are tightened (chmod) on start.
"""

from __future__ import annotations

import os
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents, 0700 too) and make it 0700; returns it."""
    path = Path(path)
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for p in reversed(missing):  # each folder this call creates is 0700, not only the last
        p.mkdir(exist_ok=True, mode=DIR_MODE)
        os.chmod(p, DIR_MODE)
    os.chmod(path, DIR_MODE)
    return path


def private_file(path: Path) -> Path:
    """Create ``path`` empty when missing, and make it 0600 (SQLite's -wal / -shm files take
    the mode of their database file); returns it."""
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE)
    os.close(fd)
    os.chmod(path, FILE_MODE)
    return path


def private_opener(path: str, flags: int) -> int:
    """``open(path, "wb", opener=private_opener)``: a file created 0600."""
    return os.open(path, flags, FILE_MODE)
