"""The adapter store: safetensors files plus a SQLite index, safe against crashes and concurrent writers.

A write goes temp file -> fsync -> rename -> index row, so a reader (or a rerun after a kill) sees
either a whole adapter or none. The index records each file's sha256; a file that no longer
matches is treated as missing (and re-encoded by :meth:`AdapterStore.get_or_encode`) rather than
injected. SQLite's own locking serialises the index across processes. Files are named after their
content, so two processes storing one document at once never leave a row pointing at the other's
bytes (safetensors writes its metadata in a random order: equal adapters differ in bytes).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from .adapter import DocAdapter, content_hash
from .data import Passage
from .encoder import DocumentEncoder
from .errors import HyperpragError

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS adapters (
    doc_hash TEXT NOT NULL, encoder TEXT NOT NULL, base_model TEXT NOT NULL,
    file TEXT NOT NULL, sha256 TEXT NOT NULL, bytes INTEGER NOT NULL, created REAL NOT NULL,
    meta TEXT NOT NULL,
    PRIMARY KEY (doc_hash, encoder, base_model))
"""


@dataclass(frozen=True)
class StoreRecord:
    doc_hash: str
    encoder: str
    base_model: str
    file: str
    sha256: str
    bytes: int
    meta: dict


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AdapterStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._create()

    def _create(self) -> None:
        """Switch a new index to WAL and create its table. Processes that open a new store at the
        same moment (an `accelerate launch` of `hyperprag encode`) race for the switch, and SQLite
        answers the loser "database is locked" at once, without waiting out the busy timeout, so
        it is retried here. WAL persists in the file: once set, nobody needs the lock for it again."""
        deadline = time.monotonic() + 60
        while True:
            try:
                with self._connect() as db:
                    if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                        db.execute("PRAGMA journal_mode=WAL")
                    db.execute(_SCHEMA)
                return
            except sqlite3.Error as err:
                if "locked" not in str(err) or time.monotonic() > deadline:
                    raise HyperpragError(f"{self.root / 'index.sqlite'}: not a usable adapter store ({err})") from None
                time.sleep(0.02 + 0.08 * random.random())

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.root / "index.sqlite", timeout=60, isolation_level=None)

    def _path_for(self, encoder: str, base_model: str, doc_hash: str, sha256: str) -> Path:
        """A file per (encoder, base model, document) and content: one store serves several base
        models, and an exact encoder's key does not name the model. Rows written before the model
        or the content was in the name keep their recorded file."""
        model = hashlib.sha256(base_model.encode()).hexdigest()[:12]
        return self.root / "adapters" / encoder / model / doc_hash[:2] / f"{doc_hash}.{sha256[:16]}.safetensors"

    def put(self, adapter: DocAdapter, encoder_key: str) -> StoreRecord:
        """Store ``adapter`` under ``encoder_key`` (an encoder's name, version and settings)."""
        data = adapter.to_bytes()
        sha = hashlib.sha256(data).hexdigest()
        path = self._path_for(encoder_key, adapter.base_model, adapter.doc_hash, sha)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        record = StoreRecord(adapter.doc_hash, encoder_key, adapter.base_model,
                             str(path.relative_to(self.root)), sha, len(data), adapter.metadata())
        key = (record.doc_hash, record.encoder, record.base_model)
        # Under the index's write lock, so that no writer removes a file another has just put in
        # place for its own row. A kill before COMMIT can cost the replaced adapter its file: then
        # the row reads as missing and is encoded again, never injected.
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            os.replace(tmp, path)
            _fsync_dir(path.parent)
            old = db.execute("SELECT file FROM adapters WHERE doc_hash=? AND encoder=? AND base_model=?",
                             key).fetchone()
            db.execute("INSERT OR REPLACE INTO adapters VALUES (?,?,?,?,?,?,?,?)",
                       (*key, record.file, record.sha256, record.bytes, time.time(), json.dumps(record.meta)))
            if old and old[0] != record.file:  # a reader still holding the old row reads the new one instead
                (self.root / old[0]).unlink(missing_ok=True)
            db.execute("COMMIT")
        return record

    def record(self, doc_hash: str, encoder: str, base_model: str) -> StoreRecord | None:
        with self._connect() as db:
            return self._record(db, doc_hash, encoder, base_model)

    @staticmethod
    def _record(db: sqlite3.Connection, doc_hash: str, encoder: str, base_model: str) -> StoreRecord | None:
        row = db.execute("SELECT doc_hash, encoder, base_model, file, sha256, bytes, meta FROM adapters "
                         "WHERE doc_hash=? AND encoder=? AND base_model=?", (doc_hash, encoder, base_model)).fetchone()
        return None if row is None else StoreRecord(*row[:6], json.loads(row[6]))

    def records(self) -> list[StoreRecord]:
        with self._connect() as db:
            rows = db.execute("SELECT doc_hash, encoder, base_model, file, sha256, bytes, meta FROM adapters").fetchall()
        return [StoreRecord(*r[:6], json.loads(r[6])) for r in rows]

    def get(self, doc_hash: str, encoder: str, base_model: str) -> DocAdapter | None:
        """The stored adapter, or None when absent or damaged (a damaged one is logged and unindexed)."""
        rec = self.record(doc_hash, encoder, base_model)
        if rec is None:
            return None
        data, problem = self._read_verified(rec)
        if problem:  # looked at again under the write lock: a writer may have been replacing the row
            with self._connect() as db:
                db.execute("BEGIN IMMEDIATE")
                rec = self._record(db, doc_hash, encoder, base_model)
                data, problem = self._read_verified(rec) if rec else (None, None)
                if problem:
                    log.warning("store %s: %s; it will be re-encoded", self.root, problem)
                    db.execute("DELETE FROM adapters WHERE doc_hash=? AND encoder=? AND base_model=?",
                               (doc_hash, encoder, base_model))
                db.execute("COMMIT")
            if rec is None or problem:
                return None
        return DocAdapter.from_bytes(data, str(self.root / rec.file))

    def _read_verified(self, rec: StoreRecord) -> tuple[bytes | None, str | None]:
        """The record's file and None, or None and why it cannot be trusted (missing, sha256 mismatch)."""
        try:
            data = (self.root / rec.file).read_bytes()
        except FileNotFoundError:
            return None, f"{rec.file} is missing"
        if hashlib.sha256(data).hexdigest() != rec.sha256:
            return None, f"{rec.file} is corrupt (sha256 mismatch)"
        return data, None

    def verify(self) -> list[str]:
        """Every problem in the store, for a report; nothing is changed."""
        return [p for p in (self._read_verified(r)[1] for r in self.records()) if p]

    def get_or_encode(self, docs: Sequence[Passage], encoder: DocumentEncoder,
                      progress: bool = True) -> list[DocAdapter]:
        """Adapters for ``docs``: stored ones are reused, missing ones encoded and stored chunk by chunk,
        so a kill loses at most the chunk in flight."""
        hashes = [content_hash(d.text) for d in docs]
        by_hash = dict(zip(hashes, docs))  # duplicates share one adapter
        found = {h: ad for h in by_hash if (ad := self.get(h, encoder.key, encoder.base_model)) is not None}
        todo_docs = [d for h, d in by_hash.items() if h not in found]
        bar = tqdm(total=len(todo_docs), desc=f"encode ({encoder.name})", unit="doc",
                   disable=not progress or not todo_docs)
        chunk_size = encoder.chunk_size
        for start in range(0, len(todo_docs), chunk_size):
            for ad in encoder.encode(todo_docs[start:start + chunk_size]):
                self.put(ad, encoder.key)
                found[ad.doc_hash] = ad
            bar.update(min(chunk_size, len(todo_docs) - start))
        bar.close()
        missing = [h for h in hashes if h not in found]
        if missing:
            raise HyperpragError(f"encoder '{encoder.name}' returned no adapter for {len(missing)} documents")
        return [found[h] for h in hashes]
