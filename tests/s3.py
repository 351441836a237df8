"""A real S3 protocol server for tests: moto's standalone server in its own process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
import uuid
from typing import Any

from tests.support import free_port

# moto accepts any credentials; boto3 needs some, and a region.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "tlserve-test",
    "AWS_SECRET_ACCESS_KEY": "tlserve-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class MotoServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1).close()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("moto's S3 server did not start") from None
                time.sleep(0.1)

    def client(self) -> Any:
        import boto3  # noqa: PLC0415

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
        )

    def new_bucket(self) -> str:
        name = f"tlserve-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def environment(self) -> dict[str, str]:
        """What a tlserve process needs to reach it (the standard AWS variables)."""
        return {**os.environ, **CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint}

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
