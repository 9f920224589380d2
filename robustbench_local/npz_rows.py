"""Rows of one array inside an ``.npz`` archive, read on demand without loading the whole array.

An ``.npz`` is a zip of ``.npy`` members; a member's rows lie one after another behind its header (C order),
so a batch of rows is a seek and a read. Stored members (``np.savez``) seek directly; compressed ones
(``np.savez_compressed``) decompress forward from the last position, which is cheap because the evaluation
reads in ascending order. Fortran-ordered members have no contiguous rows and are read whole.
"""
from __future__ import annotations

import threading
import zipfile
from pathlib import Path

import numpy as np


class NpzRows:
    """One array of an ``.npz`` archive: its shape and dtype from the header, its rows read when asked."""

    def __init__(self, path: Path, key: str) -> None:
        self.path, self.key = path, key
        self._zip = zipfile.ZipFile(path)
        self._member = self._zip.open(f"{key}.npy")
        version = np.lib.format.read_magic(self._member)
        header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        self.shape, self.fortran_order, self.dtype = header(self._member)
        self._offset = self._member.tell()
        self._row_items = int(np.prod(self.shape[1:], dtype=np.int64))
        self._whole: np.ndarray | None = None
        # Batches may be read by a prefetching thread while another asks; one read at a time per handle.
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return int(self.shape[0]) if self.shape else 0

    def rows(self, indices: np.ndarray) -> np.ndarray:
        """The rows at ``indices`` (any order), as an array of shape (len(indices), *shape[1:])."""
        indices = np.asarray(indices, dtype=np.int64)
        if self.fortran_order:
            return self._read_whole()[indices]
        order = np.argsort(indices, kind="stable")
        out = np.empty((len(indices), *self.shape[1:]), dtype=self.dtype)
        row_bytes = self._row_items * self.dtype.itemsize
        with self._lock:
            pos = 0
            sorted_idx = indices[order]
            while pos < len(sorted_idx):
                # One read per run of consecutive rows.
                end = pos + 1
                while end < len(sorted_idx) and sorted_idx[end] == sorted_idx[end - 1] + 1:
                    end += 1
                self._member.seek(self._offset + int(sorted_idx[pos]) * row_bytes)
                data = self._member.read(row_bytes * (end - pos))
                if len(data) != row_bytes * (end - pos):
                    raise OSError(f"{self.path}: array {self.key!r} ends before row {int(sorted_idx[end - 1])}")
                out[order[pos:end]] = np.frombuffer(data, dtype=self.dtype).reshape(end - pos, *self.shape[1:])
                pos = end
        return out

    def chunks(self, size: int) -> "list[range]":
        """Consecutive row ranges of at most ``size`` rows covering the array (for a pass in bounded memory)."""
        return [range(s, min(s + size, len(self))) for s in range(0, len(self), size)]

    def _read_whole(self) -> np.ndarray:
        if self._whole is None:
            with np.load(self.path, allow_pickle=False) as archive:
                self._whole = archive[self.key]
        return self._whole

    def close(self) -> None:
        """Release the archive's file handle."""
        self._member.close()
        self._zip.close()
