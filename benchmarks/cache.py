"""Measurements kept between runs, keyed by (codec identity, point, image content).

Classical codecs take most of a run's time and never change between model updates, so a
re-run only measures what is new: a new model fingerprint, a new library version or option, a
new image. The file is append-only JSON lines, one per measurement, written as each result
arrives: an interrupted run loses nothing it finished.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from .codecs import BenchCodec, Params
from .dataset import ImageFile
from .measure import Record


def cache_key(codec: BenchCodec, params: Params, image: ImageFile) -> str:
    blob = json.dumps([codec.identity(), params, image.sha256], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


class ResultCache:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._records: dict[str, Record] = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                    self._records[entry["key"]] = Record(**entry["record"])
                except (ValueError, KeyError, TypeError):
                    continue  # a torn last line or an older record layout: measure again

    def get(self, key: str, image: ImageFile) -> Record | None:
        """The cached record, under the image's current file name."""
        record = self._records.get(key)
        return dataclasses.replace(record, image=image.name) if record else None

    def put(self, key: str, record: Record) -> None:
        self._records[key] = record
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps({"key": key, "record": dataclasses.asdict(record)}) + "\n")
