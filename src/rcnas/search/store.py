"""The persistent store of candidate evaluations (SQLite), which is also the search log.

A result is keyed by (evaluation key, architecture, proxy settings, seed). Several processes may
read and write one store at once: WAL journaling, a busy timeout, and `INSERT OR IGNORE` so the
first writer of a key wins and nobody is paid twice for it.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rcnas.errors import BadInput
from rcnas.space.arch import Arch

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Record:
    """One evaluated candidate: accuracies on the validation split (under each attack of the
    evaluator), cost, LIPS, and how long it took."""
    arch: Arch
    metrics: dict[str, float]           # e.g. clean, fgsm, pgd10, cw10 accuracies in [0, 1]
    macs: int
    params: int
    seconds: float = 0.0
    status: str = "ok"                  # ok | failed
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        d = asdict(self)
        d["arch"] = self.arch.to_dict()
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Record:
        d = json.loads(text)
        d["arch"] = Arch.from_dict(d["arch"])
        return cls(**d)


class Store:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        try:
            with self._conn() as c:
                c.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
                c.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                version = int(c.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])
                c.execute("""CREATE TABLE IF NOT EXISTS evaluations (
                    eval_key TEXT, arch TEXT, proxy TEXT, seed INTEGER, record TEXT, status TEXT,
                    created REAL, PRIMARY KEY (eval_key, arch, proxy, seed))""")
                # state features of (partial) architectures, e.g. the agent's LIPS; added in schema 1
                # without a version bump: a store without the table gets it, older readers ignore it
                c.execute("""CREATE TABLE IF NOT EXISTS features (
                    eval_key TEXT, arch TEXT, name TEXT, value REAL, PRIMARY KEY (eval_key, arch, name))""")
        except sqlite3.DatabaseError as e:
            raise BadInput(f"{self.path} is not a usable rcnas store ({e}); pass another --store "
                           "or delete the file") from None
        if version != SCHEMA_VERSION:
            raise BadInput(f"{self.path} was written by an incompatible rcnas (store schema {version}, "
                           f"this version reads {SCHEMA_VERSION}); pass a new --store")

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=60000")
            self._local.conn = conn
        return conn

    def get(self, eval_key: str, arch: Arch, proxy: str, seed: int) -> Record | None:
        row = self._conn().execute(
            "SELECT record FROM evaluations WHERE eval_key=? AND arch=? AND proxy=? AND seed=?",
            (eval_key, arch.key(), proxy, seed)).fetchone()
        return Record.from_json(row[0]) if row else None

    def put(self, eval_key: str, proxy: str, seed: int, record: Record) -> bool:
        """Insert unless present; True if this call wrote it."""
        cur = self._conn().execute(
            "INSERT OR IGNORE INTO evaluations VALUES (?, ?, ?, ?, ?, ?, ?)",
            (eval_key, record.arch.key(), proxy, seed, record.to_json(), record.status, time.time()))
        return cur.rowcount == 1

    def get_feature(self, eval_key: str, arch: Arch, name: str) -> float | None:
        row = self._conn().execute("SELECT value FROM features WHERE eval_key=? AND arch=? AND name=?",
                                   (eval_key, arch.key(), name)).fetchone()
        return row[0] if row else None

    def put_feature(self, eval_key: str, arch: Arch, name: str, value: float) -> None:
        self._conn().execute("INSERT OR IGNORE INTO features VALUES (?, ?, ?, ?)",
                             (eval_key, arch.key(), name, float(value)))

    def records(self, eval_key: str | None = None) -> list[Record]:
        sql, args = "SELECT record FROM evaluations", ()
        if eval_key is not None:
            sql, args = sql + " WHERE eval_key=?", (eval_key,)
        return [Record.from_json(r[0]) for r in self._conn().execute(sql + " ORDER BY created", args)]

    def __len__(self) -> int:
        return self._conn().execute("SELECT COUNT(*) FROM evaluations").fetchone()[0]

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
