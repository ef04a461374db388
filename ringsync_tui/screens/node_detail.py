"""NodeDetailScreen: one node's disk, artifacts with their verified copies, and transfers.

Loaded from ``ClusterSource.node_detail`` in a worker when the screen opens and every
``REFRESH_SECONDS``; a failure shows on the screen (and once as a notification) and the last
good data stays. ``escape`` or ``backspace`` goes back to the dashboard.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static
from textual.worker import Worker, WorkerState

from ringsync_tui.format import (block_bar, clock, human_bytes, truncate_left,
                                 truncate_right)
from ringsync_tui.model import ArtifactRow, NodeDetail, Thresholds, TransferRow
from ringsync_tui.source import ActionError, ClusterSource
from ringsync_tui.widgets import DiskGauge
from ringsync_tui.widgets._rows import Cells, SlotRows
from ringsync_tui.widgets._styles import ComponentStyles

REFRESH_SECONDS = 2.0
"""How often the screen reloads the node's detail."""
ARTIFACT_COLUMNS = (("artifact", "artifact"), ("size", "size"), ("copies", "copies"),
                    ("holders", "holders"), ("origin", "origin"), ("config_key", "config"),
                    ("sha256", "sha256"))
"""(key, label) of the artifacts table's columns (what matters for safety first)."""
TRANSFER_COLUMNS = (("route", "route"), ("artifact", "artifact"), ("result", "progress"),
                    ("when", "finished"), ("error", "error"))
"""(key, label) of the transfers table's columns."""
ARTIFACT_WIDTH = 48
"""Artifacts longer than this are cut on the left."""
ERROR_WIDTH = 60
"""Errors longer than this are cut."""


class NodeDetailScreen(ComponentStyles, Screen[None]):
    """Everything the dashboard knows about one node."""

    AUTO_FOCUS = "#detail-artifacts"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("backspace", "back", "Back", show=False),
    ]
    """
    | Key(s) | Description |
    | :- | :- |
    | escape, backspace | Back to the dashboard. |
    """

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "node-detail--name", "node-detail--up", "node-detail--suspect", "node-detail--down",
        "node-detail--unknown", "node-detail--paused", "node-detail--ok",
        "node-detail--warning", "node-detail--error", "node-detail--muted",
        "node-detail--bar", "node-detail--bar-empty",
    }
    """
    | Class | Description |
    | :- | :- |
    | `node-detail--name` | The node's name in the header. |
    | `node-detail--up`, `--suspect`, `--down`, `--unknown` | The node's state. |
    | `node-detail--paused` | "paused" in the header. |
    | `node-detail--ok` | Enough verified copies; a transfer that completed. |
    | `node-detail--warning` | Fewer verified copies than required. |
    | `node-detail--error` | No verified copy elsewhere; a failed transfer; a load error. |
    | `node-detail--muted` | Labels and missing values. |
    | `node-detail--bar`, `--bar-empty` | A live transfer's progress bar. |
    """

    def __init__(self, node: str, source: ClusterSource, *, name: str | None = None,
                 id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.node = node
        """The node shown."""
        self.source = source
        """Where the detail comes from."""
        self.detail: NodeDetail | None = None
        """The detail shown (None until the first load answers)."""
        self.thresholds = Thresholds()
        """The cluster's thresholds (from the source's snapshot)."""
        self.error: str | None = None
        """Why the last load failed (None when it worked)."""
        self._artifacts: SlotRows | None = None
        self._transfers: SlotRows | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="detail-title", markup=False)
        with Horizontal(id="detail-disk"):
            yield DiskGauge(id="detail-gauge")
            yield Static(id="detail-space", markup=False)
        yield Static(id="detail-error", markup=False)
        yield DataTable(id="detail-artifacts", cursor_type="row")
        yield DataTable(id="detail-transfers", cursor_type="row", show_cursor=False)
        yield Footer()

    def on_mount(self) -> None:
        artifacts = self.query_one("#detail-artifacts", DataTable)
        transfers = self.query_one("#detail-transfers", DataTable)
        for key, label in ARTIFACT_COLUMNS:
            artifacts.add_column(label, key=key)
        for key, label in TRANSFER_COLUMNS:
            transfers.add_column(label, key=key)
        artifacts.border_title = "Artifacts"
        transfers.border_title = "Transfers"
        self._artifacts = SlotRows(artifacts, [key for key, _ in ARTIFACT_COLUMNS])
        self._transfers = SlotRows(transfers, [key for key, _ in TRANSFER_COLUMNS])
        self.query_one("#detail-title", Static).update(Text(f"{self.node} · loading…"))
        self.query_one("#detail-error", Static).display = False
        self.load()
        self.set_interval(REFRESH_SECONDS, self.load)

    # -- loading ----------------------------------------------------------------------------
    def load(self) -> None:
        """Reload the node's detail in a worker (a newer load replaces one still running)."""
        self.run_worker(self._load(), name="node-detail", group="node-detail", exclusive=True,
                        exit_on_error=False)

    async def _load(self) -> None:
        try:
            detail = await self.source.node_detail(self.node)
            snapshot = await self.source.snapshot()
        except ActionError as exc:
            self.show_error(str(exc))
            return
        self.thresholds = snapshot.thresholds
        self.show(detail)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "node-detail" and event.state == WorkerState.ERROR:
            error = event.worker.error
            self.show_error(f"{type(error).__name__}: {error}")

    def show_error(self, message: str) -> None:
        """Show why loading failed (notified once per distinct message)."""
        if message != self.error:
            self.notify(message, title=f"{self.node}: detail failed", severity="error")
        self.error = message
        self._show_error_line()

    def _show_error_line(self) -> None:
        message = self.error or (self.detail.error if self.detail else None)
        line = self.query_one("#detail-error", Static)
        line.display = bool(message)
        if message:
            line.update(Text(message, self.component_style("node-detail--error")))

    # -- data down --------------------------------------------------------------------------
    def show(self, detail: NodeDetail) -> None:
        """Show ``detail`` (with ``self.thresholds``)."""
        self.detail = detail
        self.error = None
        node = detail.node
        style = self.component_style
        muted = style("node-detail--muted")
        state_class = node.state if node.state in ("up", "suspect", "down") else "unknown"
        title = Text(no_wrap=False, end="")
        title.append(node.name, style("node-detail--name"))
        title.append_tokens([
            (" · ", muted), (node.role, ""), (" · ", muted), (node.provider, ""),
            (" · ", muted), (node.state, style(f"node-detail--{state_class}")),
            (" · strategy ", muted), (node.strategy or "-", ""),
            (" · ", muted), (f"{node.pending} pending ({human_bytes(node.pending_bytes)})", ""),
        ])
        if node.paused:
            title.append_tokens([(" · ", muted), ("paused", style("node-detail--paused"))])
        if node.ephemeral:
            title.append_tokens([(" · ", muted), ("ephemeral", "")])
        if node.backpressure:
            title.append_tokens([(" · ", muted), (f"backpressure ({node.backpressure}):"
                                                  " urgent syncs only", style("node-detail--warning"))])
        if node.open_breakers:
            title.append_tokens([(" · breaker open to ", muted),
                                 (", ".join(node.open_breakers), style("node-detail--warning"))])
        if node.scrub is not None:
            scrub = node.scrub
            title.append_tokens([
                (" · scrub ", muted),
                (f"pass {scrub.passes + 1} {scrub.position}/{scrub.copies}"
                 f" at {human_bytes(scrub.rate_bytes_per_second)}/s", ""),
                *([(" · ", muted), (f"{scrub.rotted} rotted copies quarantined",
                                     style("node-detail--warning"))] if scrub.rotted else [])])
        if node.last_error:
            title.append_tokens([(" · last error: ", muted),
                                 (node.last_error, style("node-detail--error"))])
        self.query_one("#detail-title", Static).update(title)
        gauge = self.query_one("#detail-gauge", DiskGauge)
        gauge.thresholds = self.thresholds
        gauge.percent = node.percent
        self.query_one("#detail-space", Static).update(Text.assemble(
            (human_bytes(node.free_bytes), ""), (" free · ", muted),
            (human_bytes(node.used_bytes), ""), (" used · ", muted),
            (human_bytes(node.total_bytes), ""), (" total", muted)))
        self._show_error_line()
        artifacts = self.query_one("#detail-artifacts", DataTable)
        artifacts.border_title = (f"Artifacts · {len(detail.artifacts):,}"
                                  f" of {detail.total_artifacts:,}")
        transfers = self.query_one("#detail-transfers", DataTable)
        transfers.border_title = f"Transfers · {len(detail.transfers):,}"
        if self._artifacts is not None and self._transfers is not None:
            self._artifacts.sync(self._artifact_cells(a) for a in detail.artifacts)
            self._transfers.sync(self._transfer_cells(t) for t in detail.transfers)

    def _artifact_cells(self, artifact: ArtifactRow) -> Cells:
        style = self.component_style
        muted = style("node-detail--muted")
        others = [h for h in artifact.holders if h != artifact.origin]
        need = self.thresholds.min_copies
        if len(others) >= need:
            copies = Text(f"{len(others)}/{need} ✓", style("node-detail--ok"), end="")
        else:
            copies = Text(f"{len(others)}/{need} !",
                          style("node-detail--warning" if others else "node-detail--error"),
                          end="")
        holders = Text(", ".join(artifact.holders) if artifact.holders else "none",
                       "" if artifact.holders else muted, end="")
        return (truncate_left(artifact.key, ARTIFACT_WIDTH),
                Text(human_bytes(artifact.size), justify="right", end=""), copies, holders,
                artifact.origin,
                Text(artifact.config_key or "-", "" if artifact.config_key else muted, end=""),
                Text(artifact.sha256[:12], muted, end=""))

    def _transfer_cells(self, transfer: TransferRow) -> Cells:
        style = self.component_style
        muted = style("node-detail--muted")
        if transfer.finished is None:
            done, rest = block_bar(transfer.progress, 10)
            result = Text(done, style("node-detail--bar"), end="")
            result.append(rest, style("node-detail--bar-empty"))
            result.append(f" {min(100, max(0, int(transfer.progress * 100))):>3d}%")
            when = Text("live", muted, end="")
        else:
            result = (Text("failed", style("node-detail--error"), end="") if transfer.error
                      else Text("ok", style("node-detail--ok"), end=""))
            when = Text(clock(transfer.finished), end="")
        error = Text(truncate_right(" ".join((transfer.error or "").split()), ERROR_WIDTH),
                     style("node-detail--error"), end="")
        return (f"{transfer.source} → {transfer.target}",
                truncate_left(transfer.artifact, ARTIFACT_WIDTH), result, when, error)

    # -- keys -------------------------------------------------------------------------------
    def action_back(self) -> None:
        """Back to the dashboard."""
        self.app.pop_screen()
