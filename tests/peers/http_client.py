"""One HTTPS request as a chat client's HTTP stack makes it after an XEP-0363 slot, for the agent's
`http` command: streamed from and to files, so a 50 MiB transfer costs the test no memory.
"""

import hashlib
import http.client
import os
import socket
import ssl
from urllib.parse import urlsplit


def http_request(args, cmd):
    """`cmd`: method, url, headers, body or body_file, send_only (stop after that many bytes and
    drop the connection), pause_after + resume_file (stop after that many bytes until the file
    exists), save_to. The host in the URL is reached at args.host (loopback)."""
    url = urlsplit(cmd["url"])
    ctx = ssl.create_default_context(cafile=args.ca_file)

    class Conn(http.client.HTTPSConnection):
        def connect(self):
            raw = socket.create_connection((args.host, url.port or 443), timeout=60)
            self.sock = ctx.wrap_socket(raw, server_hostname=url.hostname)

    conn = Conn(url.hostname, url.port or 443, context=ctx, timeout=60)
    target = url.path + (f"?{url.query}" if url.query else "")
    headers = dict(cmd.get("headers", {}))
    body = None
    if "body_file" in cmd:
        body = open(cmd["body_file"], "rb")
        headers.setdefault("Content-Length", str(os.fstat(body.fileno()).st_size))
    elif "body" in cmd:
        body = cmd["body"].encode()
        headers.setdefault("Content-Length", str(len(body)))
    try:
        conn.putrequest(cmd.get("method", "GET"), target, skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.endheaders()
        try:
            if isinstance(body, bytes):
                conn.send(body[: int(cmd.get("send_only", len(body)))])
            elif body is not None:
                left = int(cmd.get("send_only", 1 << 62))
                pause = int(cmd.get("pause_after", -1))
                sent = 0
                while left > 0:
                    chunk = body.read(min(65536, left, pause - sent if sent < pause else 65536))
                    if not chunk:
                        break
                    conn.send(chunk)
                    left -= len(chunk)
                    sent += len(chunk)
                    if sent == pause:
                        # The test does something to the server meanwhile (fills its disk).
                        wait_for(cmd["resume_file"])
        except OSError:
            # The server answered before taking the whole body (a refusal) and closed: read it.
            pass
        if "send_only" in cmd:
            # A phone that loses its network mid-upload: the connection just ends.
            conn.sock.close()
            return {"status": 0, "closed": True}
        resp = conn.getresponse()
        digest, length, text = hashlib.sha256(), 0, b""
        out = open(cmd["save_to"], "wb") if "save_to" in cmd else None
        while True:
            chunk = resp.read(65536)
            if not chunk:
                break
            digest.update(chunk)
            length += len(chunk)
            if out:
                out.write(chunk)
            elif len(text) < 65536:
                text += chunk
        if out:
            out.close()
        return {"status": resp.status, "headers": {k.lower(): v for k, v in resp.getheaders()},
                "length": length, "sha256": digest.hexdigest(),
                "text": text.decode("utf-8", "replace")}
    except (OSError, http.client.HTTPException) as e:
        return {"status": 0, "error": f"{type(e).__name__}: {e}"}
    finally:
        if hasattr(body, "close"):
            body.close()
        conn.close()


def wait_for(path, timeout=30):
    import time
    deadline = time.monotonic() + timeout
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.02)
