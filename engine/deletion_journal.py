"""Crash-safe deletion of a source: the intent is durable before the unlink.

A deletion of an own source goes through ``.ringsync/deleting/``:

1. ``begin``: ``<id>.json`` (which version, where its source is, the source's identity, who
   vouched) is written and fsynced, with its directory;
2. the source is renamed to ``<id>.trash`` (both directories fsynced), checked to be still the
   same unopened, unchanged inode, and unlinked (the directory fsynced);
3. the deletion is recorded in the manifest with ``synchronous=FULL``;
4. ``<id>.json`` is removed.

``recover`` runs at every start, before anything scans or serves: an intent whose trash file
is still there is put back under its name (never over a new file there: then it goes to the
quarantine), since the vouches it had are not fresh any more; one whose trash is gone and
whose source is not the recorded file (its whole identity: st_dev, st_ino, size, mtime,
ctime) was unlinked, so the deletion is recorded (the
manifest agrees with the disk); one whose source is still the recorded inode never got as
far as the rename. A stray file without an intent is put in the quarantine. Nothing is left
in ``deleting/`` afterwards, so nothing there counts against the quota for ever.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from engine.diskio import fsync_dir, fsync_path
from engine.manifest import Artifact
from engine.manifest.store import stat_identity

if TYPE_CHECKING:
    from engine.manifest import ClusterManifest
    from engine.paths import DataRoot

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Intent:
    """One deletion under way."""

    intent: Path
    trash: Path
    source: Path


def begin(data: "DataRoot", art: Artifact, source: Path, vouched_by: list[str]) -> Intent:
    """Write the durable intent to delete ``source`` (version ``art``)."""
    trash_dir = data.state / "deleting"
    trash_dir.mkdir(parents=True, exist_ok=True)
    name = uuid.uuid4().hex
    intent = trash_dir / f"{name}.json"
    record = {"origin": art.origin, "data_type": art.data_type, "path": art.path,
              "sha256": art.sha256, "size": art.size, "source": str(source),
              "identity": list(art.source_identity),
              "vouched_by": sorted(vouched_by), "started_at": time.time()}
    tmp = trash_dir / f".{name}.tmp"
    tmp.write_text(json.dumps(record))
    fsync_path(tmp)
    os.rename(tmp, intent)
    fsync_dir(trash_dir)
    return Intent(intent, trash_dir / f"{name}.trash", source)


def finish(intent: Intent) -> None:
    """The deletion is recorded in the manifest: the intent is done."""
    intent.intent.unlink(missing_ok=True)
    fsync_dir(intent.intent.parent)


def put_back(trash: Path, source: Path, data: "DataRoot") -> str:
    """Return a file that must not be deleted to its name; never over a new file there (it
    then goes to the quarantine). Says where it went."""
    try:
        os.link(trash, source)
    except FileExistsError:
        target = data.quarantine / "deleting" / trash.name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(trash, target)
        log.error("%s reappeared while it was being deleted; the old file is kept as %s",
                  source, target)
        return str(target)
    except FileNotFoundError:  # its directory went away meanwhile
        source.parent.mkdir(parents=True, exist_ok=True)
        os.link(trash, source)
    os.unlink(trash)
    fsync_dir(source.parent)
    return str(source)


def recover(data: "DataRoot", manifest: "ClusterManifest") -> list[str]:
    """Finish or undo every deletion a crash interrupted; returns one line per fix."""
    trash_dir = data.state / "deleting"
    if not trash_dir.is_dir():
        return []
    done: list[str] = []
    for intent_file in sorted(trash_dir.glob("*.json")):
        try:
            record = json.loads(intent_file.read_text())
        except (OSError, ValueError):
            log.error("unreadable deletion intent %s: left for an operator", intent_file)
            continue
        trash = intent_file.with_suffix(".trash")
        source = Path(record["source"])
        if trash.exists():
            where = put_back(trash, source, data)
            if where == str(source):
                done.append(f"put back {record['data_type']}/{record['path']}")
            else:
                done.append(f"{record['data_type']}/{record['path']} has a new file under its"
                            f" name: the old one is kept in the quarantine as {where}")
        else:
            try:  # the whole identity: a freed inode number is soon given to a new file
                same = list(stat_identity(source.stat())) == record.get("identity")
            except FileNotFoundError:
                same = False
            if not same:
                art = Artifact(record["data_type"], record["path"], None, record["size"],
                               record["sha256"], 0.0, record["origin"])
                ident = art.ident
                if ident not in manifest.deleted_sources(art.origin):
                    manifest.record_deletion(art, record["vouched_by"])
                done.append(f"recorded the deletion of {art.key}")
        intent_file.unlink()
    for stray in sorted(p for p in trash_dir.iterdir() if p.suffix != ".json"
                        and not p.name.startswith(".")):
        target = data.quarantine / "deleting" / stray.name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(stray, target)
        done.append(f"moved stray {stray.name} to the quarantine as {target}")
    for tmp in trash_dir.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
    fsync_dir(trash_dir)
    return done
