"""A minimal HTTPS server for the handshake benchmark, run in its own process (no GIL sharing).

    python -m tls_server CERTFILE KEYFILE        (with bench/ as the working directory)

Prints its port on the first line of stdout, then serves one connection at a time: handshake,
read one request, answer ``200 hello``, close. It exits when its stdin is closed.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import sys
import threading

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"


def main(certfile: str, keyfile: str) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certfile, keyfile)
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    print(listener.getsockname()[1], flush=True)
    # Exit as soon as the parent closes our stdin (or dies).
    threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with contextlib.suppress(OSError), ctx.wrap_socket(conn, server_side=True) as tls:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = tls.recv(4096)
                if not chunk:
                    break
                data += chunk
            tls.sendall(RESPONSE)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
