"""Real servers on 127.0.0.1 for the source tests: a local S3 (moto's server mode, with IAM
authentication on), an MLflow tracking server (SQLite backend, proxied artifact store), and a small
HTTP proxy that makes that MLflow server require a bearer token (shared as tests/servers.py says).

Each is started once per test session by the fixtures in tests/conftest.py, lazily (only when a
test asks for it), and stopped at the end of the session.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import sys
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.servers import free_port, process_server

#: How long a server may take to answer after it was started (the MLflow server migrates its SQLite
#: database first: about 20 s on an idle 2-core machine, over a minute on a loaded one).
STARTUP_TIMEOUT = 240.0
REGION = "us-east-1"


@dataclass
class S3Server:
    """moto's S3 on 127.0.0.1 with IAM authentication on: only `key`/`secret` are accepted."""

    endpoint: str
    key: str
    secret: str
    #: Requests the server answered, "GET /bucket/key" (from its werkzeug request log).
    requests: list[str] = field(default_factory=list)

    def environment(self) -> dict[str, str]:
        """The standard AWS variables a user would set for this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.key,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_DEFAULT_REGION": REGION,
        }

    def object_gets(self, bucket: str) -> list[str]:
        """The GET requests for objects of `bucket` so far (listings, ``?list-type=2``, excluded)."""
        prefix = f"GET /{bucket}/"
        return [line for line in self.requests if line.startswith(prefix) and "list-type" not in line]


class _RequestLog(logging.Handler):
    """Collects werkzeug's access-log lines ("GET /path HTTP/1.1" 200) of the moto server."""

    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.INFO)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        start, end = message.find('"'), message.rfind('"')
        if 0 <= start < end:
            self.into.append(message[start + 1 : end].rsplit(" HTTP/", 1)[0])


@contextlib.contextmanager
def s3_server() -> Iterator[S3Server]:
    """moto's threaded server, an IAM user allowed s3:*, then authentication switched on."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    requests: list[str] = []
    handler = _RequestLog(requests)
    werkzeug = logging.getLogger("werkzeug")
    werkzeug.addHandler(handler)
    werkzeug.setLevel(logging.INFO)
    werkzeug.propagate = False  # the access log is counted, not printed into every test's output
    try:
        admin = {
            "endpoint_url": endpoint,
            "aws_access_key_id": "bootstrap",
            "aws_secret_access_key": "bootstrap",
            "region_name": REGION,
        }
        iam = boto3.client("iam", **admin)
        iam.create_user(UserName="drift-auditor")
        allow = {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}
        policy = {"Version": "2012-10-17", "Statement": [allow]}
        arn = iam.create_policy(PolicyName="s3-all", PolicyDocument=json.dumps(policy))["Policy"]["Arn"]
        iam.attach_user_policy(UserName="drift-auditor", PolicyArn=arn)
        access = iam.create_access_key(UserName="drift-auditor")["AccessKey"]
        # from now on every request must be signed by a known key with a policy that allows it
        switch_on = urllib.request.Request(
            f"{endpoint}/moto-api/reset-auth", b"0", headers={"Content-Type": "text/plain"}, method="POST"
        )
        urllib.request.urlopen(switch_on).close()
        yield S3Server(endpoint, access["AccessKeyId"], access["SecretAccessKey"], requests)
    finally:
        werkzeug.removeHandler(handler)
        server.stop()


@dataclass(frozen=True)
class MlflowServer:
    """An MLflow tracking server: ``mlflow server`` with a SQLite backend and local artifact root."""

    url: str
    folder: Path


@contextlib.contextmanager
def mlflow_server(folder: Path) -> Iterator[MlflowServer]:
    """``mlflow server`` (SQLite backend, local artifact store) on a free loopback port, in its own
    process group (`tests.servers.process_server`), with the developer's MLFLOW_* settings kept out."""
    command = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
        "--backend-store-uri",
        f"sqlite:///{folder / 'mlflow.db'}",
        "--artifacts-destination",
        str(folder / "artifacts"),
        "--workers",
        "1",
    ]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    with process_server(
        command, health_path="/health", env=environment, folder=folder, timeout=STARTUP_TIMEOUT
    ) as server:
        yield MlflowServer(server.url, folder)


@dataclass
class TokenProxy:
    """An HTTP proxy in front of a server that answers 401 unless ``Authorization: Bearer <token>``
    (what a managed MLflow server does; the OSS server has no token auth of its own)."""

    url: str
    token: str
    #: The Authorization headers it saw (to check what the client sent).
    seen: list[str] = field(default_factory=list)


@contextlib.contextmanager
def token_proxy(upstream: str, token: str) -> Iterator[TokenProxy]:
    target = urllib.parse.urlsplit(upstream)
    port = free_port()
    proxy = TokenProxy(f"http://127.0.0.1:{port}", token)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            return

        def _forward(self) -> None:
            authorization = self.headers.get("Authorization", "")
            proxy.seen.append(authorization)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            if authorization != f"Bearer {token}":
                payload = json.dumps(
                    {"error_code": "UNAUTHENTICATED", "message": "401 Unauthorized: bearer token required"}
                ).encode()
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "authorization")}
            connection = http.client.HTTPConnection(target.hostname, target.port, timeout=120)
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            self.send_response(response.status)
            for name, value in response.getheaders():
                if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            connection.close()

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        server.shutdown()
        server.server_close()
