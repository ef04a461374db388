"""The oldest rsync ringsync runs, on either end of a transfer.

rsync 3.4.0 (January 2025) fixed CVE-2024-12084 to 12088 and CVE-2024-12747; 3.4.3 (May 2026)
fixed CVE-2026-43618 and 43620. A node pulling from or pushing to a rented host talks to an
rsync it does not control, so an older one on either end is refused with one line.
"""

from __future__ import annotations

import re

MIN_RSYNC = (3, 4, 3)
"""The oldest rsync accepted (the fixes named above)."""

_VERSION = re.compile(r"rsync\s+version\s+v?(\d+)\.(\d+)(?:\.(\d+))?")


class OldRsync(Exception):
    """An rsync older than ``MIN_RSYNC``, or one whose version cannot be read."""


def parse_version(text: str) -> tuple[int, int, int] | None:
    """The version in ``rsync --version``'s output (``rsync  version 3.5.0  protocol…``)."""
    match = _VERSION.search(text)
    if match is None:
        return None
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch or 0)


def require(text: str, where: str) -> tuple[int, int, int]:
    """The version in ``text`` when it is at least ``MIN_RSYNC``; else OldRsync naming
    ``where`` (``this node``, ``coord``)."""
    version = parse_version(text)
    floor = ".".join(map(str, MIN_RSYNC))
    if version is None:
        first = text.strip().splitlines()[0][:80] if text.strip() else "no output"
        raise OldRsync(f"cannot read the rsync version on {where} ({first!r}); ringsync needs"
                       f" rsync >= {floor}")
    if version < MIN_RSYNC:
        found = ".".join(map(str, version))
        raise OldRsync(f"rsync {found} on {where} is older than {floor} (CVE-2024-12084..12088,"
                       f" CVE-2024-12747, CVE-2026-43618, CVE-2026-43620): refused; install"
                       f" rsync >= {floor} there")
    return version
