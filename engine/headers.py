"""The node API's ``X-Ringsync-*`` header names, shared by the receiving handlers
(``engine.server.objects``) and the HTTP transport that sends them."""

H_SIZE, H_SHA, H_OFFSET = "X-Ringsync-Size", "X-Ringsync-Sha256", "X-Ringsync-Offset"
H_SOURCE, H_ORIGIN, H_KEY = "X-Ringsync-Source", "X-Ringsync-Origin", "X-Ringsync-Config-Key"
H_MTIME, H_REASON, H_VERIFIED = "X-Ringsync-Mtime", "X-Ringsync-Reason", "X-Ringsync-Verified-At"
H_VERIFY, H_LIVE = "X-Ringsync-Verify", "X-Ringsync-Live"
H_URGENCY, H_BACKPRESSURE = "X-Ringsync-Urgency", "X-Ringsync-Backpressure"
H_ROOT = "X-Ringsync-Root-Id"
