"""Streaming shard reads from S3: our reader (``S3Storage.open_read``: boto3 GET resumed with ``Range`` + ``If-Match``,
plus ``data.cache.ReadAheadStream``) against ``pyarrow.fs.S3FileSystem`` with ``AwsStandardS3RetryStrategy``.

A moto_server holds a few objects; every reader streams each object through a small HTTP proxy on loopback, once
directly, through the proxy clean, and through the proxy with faults (every ``--fail-every``-th GET answered
``503 SlowDown``; once per ``--drop-every-mb`` MB of body served, a response is cut off and its connection closed). Each read's
SHA-256 is compared with the object's: a reader that returns short or spliced data without an error is the worst
outcome. Readers consume the stream the way the loader's tar iteration does (``--read-kib`` reads).
Not a test: prints MB/s and the outcome per reader. Run: ``.venv/bin/python bench/s3_streaming.py`` (~1 minute).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' S3 endpoint helper

from padnet_dist.config.run import StorageConfig
from padnet_dist.data.cache import ReadAheadStream
from padnet_dist.storage import storage_for
from tests.helpers.s3 import FAKE_AWS_ENV, MotoServer, new_bucket


class FaultProxy(ThreadingHTTPServer):
    """Forwards HTTP to ``upstream``; every ``fail_every``-th GET fails with 503, and once per ``drop_every_bytes``
    of GET body served the connection is cut mid-body (the same number of drops per MB for every reader)."""

    daemon_threads = True

    def __init__(self, upstream: str, fail_every: int, drop_every_bytes: int) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream = upstream.removeprefix("http://")
        self.fail_every, self.drop_every_bytes = fail_every, drop_every_bytes
        self.faults_on = False
        self.num_gets = self.num_503 = self.num_drops = self.served = 0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def next_fault(self, method: str) -> str:
        if method != "GET":
            return ""
        with self.lock:
            self.num_gets += 1
            if not self.faults_on:
                return ""
            if self.fail_every and self.num_gets % self.fail_every == 0:
                self.num_503 += 1
                return "503"
        return ""

    def cut_point(self, num_body_bytes: int) -> int | None:
        """Where to cut this body: every ``drop_every_bytes`` of GET body served, the connection drops once."""
        with self.lock:
            if not self.faults_on or not self.drop_every_bytes:
                self.served += num_body_bytes
                return None
            to_next = self.drop_every_bytes - self.served % self.drop_every_bytes
            if num_body_bytes <= to_next:
                self.served += num_body_bytes
                return None
            self.served += to_next
            self.num_drops += 1
            return to_next


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FaultProxy

    def log_message(self, *args: object) -> None:
        pass

    def _forward(self) -> None:
        fault = self.server.next_fault(self.command)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        if fault == "503":
            payload = b"<Error><Code>SlowDown</Code><Message>injected</Message></Error>"
            self.send_response(503)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        upstream = http.client.HTTPConnection(self.server.upstream, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
        upstream.request(self.command, self.path, body=body, headers=headers)
        response = upstream.getresponse()
        data = response.read()
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in ("connection", "transfer-encoding", "content-length", "server", "date"):
                self.send_header(key, value)
        if self.command == "HEAD":
            self.send_header("Content-Length", response.getheader("Content-Length", "0"))
        else:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        cut = self.server.cut_point(len(data)) if self.command == "GET" else None
        if cut is not None:
            self.wfile.write(data[:cut])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)  # the peer sees the body end early: a dropped connection
            self.close_connection = True
        else:
            self.wfile.write(data)
        upstream.close()

    do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _forward


def _readers(endpoint_url: str, bucket: str) -> dict:
    import pyarrow.fs as pafs

    ours = storage_for("s3://x/", StorageConfig(endpoint_url=endpoint_url))
    arrow = pafs.S3FileSystem(
        endpoint_override=endpoint_url.removeprefix("http://"),
        scheme="http",
        region="us-east-1",
        retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=ours.max_attempts),
    )

    def arrow_stream(key: str):  # noqa: ANN202 - a pyarrow NativeFile
        return arrow.open_input_stream(f"{bucket}/{key}", buffer_size=4 << 20)

    return {
        "ours: boto3 GET + Range resume": lambda key: ours.open_read(f"s3://{bucket}/{key}"),
        "ours + ReadAheadStream (loader default)": lambda key: ReadAheadStream(ours.open_read(f"s3://{bucket}/{key}")),
        "pyarrow S3FileSystem, 4 MiB buffer": arrow_stream,
        "pyarrow + ReadAheadStream": lambda key: ReadAheadStream(arrow_stream(key)),
    }


def consume(stream, read_bytes: int) -> tuple[str, int]:
    digest, total = hashlib.sha256(), 0
    while chunk := stream.read(read_bytes):
        digest.update(chunk)
        total += len(chunk)
    return digest.hexdigest(), total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-objects", type=int, default=3)
    parser.add_argument("--object-mb", type=int, default=48)
    parser.add_argument("--read-kib", type=int, default=64, help="size of each read() the consumer makes")
    parser.add_argument("--fail-every", type=int, default=3, help="answer every Nth GET with 503 SlowDown")
    parser.add_argument("--drop-every-mb", type=float, default=20, help="cut a connection once per N MB served")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    os.environ.update(FAKE_AWS_ENV)
    with MotoServer() as endpoint:
        bucket = new_bucket(endpoint, prefix="bench")
        proxy = FaultProxy(endpoint, args.fail_every, int(args.drop_every_mb * 1e6))
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        expected, num_bytes = {}, 0
        for i in range(args.num_objects):
            data = os.urandom(args.object_mb << 20)
            key = f"shard-{i}.tar"
            bucket.client().put_object(Bucket=bucket.bucket, Key=key, Body=data)
            expected[key], num_bytes = hashlib.sha256(data).hexdigest(), num_bytes + len(data)
        print(
            f"{args.num_objects} objects x {args.object_mb} MiB, reads of {args.read_kib} KiB; faults (through a "
            f"loopback proxy): every {args.fail_every}th GET 503, a connection cut once per {args.drop_every_mb:g} MB"
        )
        for label, url in (("direct", endpoint), ("proxy ", proxy.url), ("faults", proxy.url)):
            proxy.faults_on = label == "faults"
            for name, open_stream in _readers(url, bucket.bucket).items():
                rates, outcome = [], "ok"
                proxy.num_gets = proxy.num_503 = proxy.num_drops = 0
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    try:
                        for key, digest in expected.items():
                            with open_stream(key) as stream:
                                got, size = consume(stream, args.read_kib << 10)
                            if got != digest:
                                outcome = f"WRONG DATA ({size} of {args.object_mb << 20} bytes, no error)"
                    except Exception as e:
                        outcome = f"error {type(e).__name__}: {str(e).splitlines()[0][:90]}"
                    rates.append(num_bytes / (time.perf_counter() - start) / 1e6)
                print(
                    f"{label} {name:40s} {max(rates):7.1f} MB/s (best of {args.repeats})  {outcome}  "
                    f"[proxy: GETs {proxy.num_gets}, 503 {proxy.num_503}, drops {proxy.num_drops}]"
                )
        proxy.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
