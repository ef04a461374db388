"""Raw uploads for tests: speak the object protocol by hand, including wrongly."""

from __future__ import annotations

import hashlib
import http.client
import socket

from tests.support.cluster import TOKEN, Cluster, Response


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def put(cluster: Cluster, node: str, data_type: str, path: str, body: bytes, *,
        declared_sha: str | None = None, declared_size: int | None = None, offset: int = 0,
        source: str = "test", origin: str | None = "gpu-1") -> Response:
    """PUT ``body`` as the bytes from ``offset`` of an object of the declared size and hash,
    a version of ``origin``'s artifact (``origin=None`` sends no X-Ringsync-Origin)."""
    headers = {
        "X-Ringsync-Size": str(declared_size if declared_size is not None else offset + len(body)),
        "X-Ringsync-Sha256": declared_sha or sha(body),
        "X-Ringsync-Offset": str(offset),
        "X-Ringsync-Source": source,
        "Content-Type": "application/octet-stream",
    }
    if origin is not None:
        headers["X-Ringsync-Origin"] = origin
    return cluster.request(node, "PUT", f"/v1/objects/{data_type}/{path}", body=body,
                           headers=headers)


def put_and_hang_up(cluster: Cluster, node: str, data_type: str, path: str, whole: bytes,
                    send: int, origin: str = "gpu-1") -> None:
    """Start an upload of ``whole`` but send only ``send`` bytes, then drop the connection."""
    sock = socket.create_connection(("127.0.0.1", cluster.nodes[node].port), timeout=10)
    head = (f"PUT /v1/objects/{data_type}/{path} HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {TOKEN}\r\nContent-Length: {len(whole)}\r\n"
            f"X-Ringsync-Size: {len(whole)}\r\nX-Ringsync-Sha256: {sha(whole)}\r\n"
            f"X-Ringsync-Offset: 0\r\nX-Ringsync-Source: test\r\n"
            f"X-Ringsync-Origin: {origin}\r\n\r\n").encode()
    sock.sendall(head + whole[:send])
    sock.close()


def raw_request(cluster: Cluster, node: str, request_line_path: str, method: str = "PUT",
                body: bytes = b"x", origin: str = "gpu-1") -> int:
    """Send a request whose path is given byte-for-byte (no client-side normalisation)."""
    conn = http.client.HTTPConnection("127.0.0.1", cluster.nodes[node].port, timeout=10)
    try:
        conn.putrequest(method, request_line_path, skip_accept_encoding=True)
        conn.putheader("Authorization", f"Bearer {TOKEN}")
        conn.putheader("Content-Length", str(len(body)))
        conn.putheader("X-Ringsync-Size", str(len(body)))
        conn.putheader("X-Ringsync-Sha256", sha(body))
        conn.putheader("X-Ringsync-Origin", origin)
        conn.endheaders(body)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()
