"""The filesystem blob store (chat uploads): one file per upload under ``<data dir>/blobs``.

Files are written to a temporary name and renamed, so a reader never sees half a blob. In
scaled mode every gateway must see the same directory (a shared volume); an object store would
be another adapter of the same port.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from fanout.chat.model import UploadId

__all__ = ["FileBlobStore"]


class FileBlobStore:
    def __init__(self, root: Path) -> None:
        self._root = root

    def _path(self, upload_id: UploadId) -> Path:
        name = f"{upload_id:020d}"
        return self._root / name[-3:] / name  # spread over 1000 directories

    async def put(self, upload_id: UploadId, data: bytes) -> None:
        await asyncio.to_thread(self._write, self._path(upload_id), data)

    async def get(self, upload_id: UploadId) -> bytes | None:
        path = self._path(upload_id)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            return None

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
