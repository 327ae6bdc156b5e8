"""Lambda SnapStart runtime hooks (``deploy.snap_start = true``).

With SnapStart, Lambda runs the init phase (model loaded, session warmed) once when a version is published,
snapshots the process, and restores copies of it for cold starts. What must not be shared between restored
copies is renewed after each restore: AWS clients (connections and credentials of the snapshot's moment)
are dropped so the next call makes fresh ones, and the per-model cold-start metric counts the restore.
``snapshot_restore_py`` is provided by Lambda's Python runtime; elsewhere the hooks are simply not registered.
"""

from __future__ import annotations

import sys

from functions import telemetry


def before_snapshot() -> None:
    telemetry.logger.info("snapshot: model loaded and warmed; the process is about to be snapshotted")


def after_restore() -> None:
    # Only a function that made AWS clients has any to renew; the HTTP function never imports boto3 (~1 s of init).
    s3io = sys.modules.get("functions.batch.s3io")
    if s3io is not None:
        s3io.clear_clients()
    telemetry.reset_cold_start()
    telemetry.logger.info("restored from a SnapStart snapshot; AWS clients renewed")


def register_hooks() -> bool:
    """Register the hooks when running on a SnapStart-capable runtime; True if they were registered."""
    try:
        from snapshot_restore_py import (
            register_after_restore,
            register_before_snapshot,
        )
    except ImportError:
        return False
    register_before_snapshot(before_snapshot)
    register_after_restore(after_restore)
    return True
