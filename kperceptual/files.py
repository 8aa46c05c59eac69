"""Atomic file writes: a reader never sees half a file, and a failed write leaves nothing.

No TensorFlow here: images, videos and exports all write through this module.
"""

from __future__ import annotations

import contextlib
import os


@contextlib.contextmanager
def atomic_path(path: str):
    """Yields a temporary path beside ``path`` (same extension, so writers that choose their
    format by it still work); once the block ends without an exception, the file there is
    renamed to ``path``. Whatever is left at the temporary path is removed either way."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    root, ext = os.path.splitext(path)
    tmp = f"{root}.tmp-{os.getpid()}{ext}"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_atomically(path: str, content: bytes, overwrite: bool = False) -> str:
    """Writes ``content`` to ``path`` by a rename; an existing file needs ``overwrite``."""
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path}: already exists (pass --overwrite to replace it)")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(content)
    return path
