"""Owner records: each reservation as a JSON file under ``state_dir/owners/<key>.json``.

Written when a reservation is made (before any resource exists) and removed when it is
released (before its ledger entry goes), so a corrupt ledger can be rebuilt from them
(``gc --rebuild``) and ``gc`` can find records of instances the ledger no longer knows.
"""

from __future__ import annotations

import json
import os

from hook.host.fsutil import replace_file
from hook.model import Reservation

DIR_NAME = "owners"
SUFFIX = ".json"


def records_dir(state_dir: str) -> str:
    return os.path.join(state_dir, DIR_NAME)


def record_path(state_dir: str, key: str) -> str:
    return os.path.join(records_dir(state_dir), key + SUFFIX)


def write(state_dir: str, res: Reservation) -> None:
    """Write (or replace) the record of ``res``; raises OSError."""
    os.makedirs(records_dir(state_dir), mode=0o700, exist_ok=True)
    replace_file(record_path(state_dir, res.key), json.dumps(res.to_dict()).encode(), 0o600, durable=False)


def remove(state_dir: str, key: str) -> None:
    """Remove the record of ``key``; a missing record is fine."""
    try:
        os.unlink(record_path(state_dir, key))
    except FileNotFoundError:
        pass


def keys(state_dir: str) -> list[str]:
    """Keys of all records on disk (temp files of interrupted writes included, by their key)."""
    try:
        names = os.listdir(records_dir(state_dir))
    except FileNotFoundError:
        return []
    found = set()
    for name in names:
        base = name.lstrip(".")
        if base.endswith(SUFFIX) or SUFFIX + "." in base:
            found.add(base.split(SUFFIX, 1)[0])
    return sorted(found)


def remove_any(state_dir: str, key: str) -> None:
    """Remove the record of ``key`` and any temp file a killed write left for it."""
    directory = records_dir(state_dir)
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    for name in names:
        if name.lstrip(".").startswith(key + SUFFIX):
            try:
                os.unlink(os.path.join(directory, name))
            except FileNotFoundError:
                pass


def read_all(state_dir: str) -> tuple[list[Reservation], list[str]]:
    """All readable records, and the names of unreadable ones."""
    good: list[Reservation] = []
    bad: list[str] = []
    for key in keys(state_dir):
        try:
            with open(record_path(state_dir, key), encoding="utf-8") as fh:
                good.append(Reservation.from_dict(json.load(fh)))
        except (OSError, ValueError, TypeError, KeyError) as exc:
            bad.append(f"{key}: {exc}")
    return good, bad
