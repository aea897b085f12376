"""The AWS side of the cloud tests: a real moto server seeded with IAM principals and ECR repos.

Every request moto serves is recorded (moto's own recorder) to a file in the session's temp
directory, so tests can count upstream calls and read what the broker sent (e.g. the
AssumeRole session policy) from what the server received.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import parse_qs

import boto3
import requests
from botocore.config import Config

from tests.harness.moto_server import MotoServer

ACCOUNT = "123456789012"  # moto's default account: the one IAM users and repositories live in
REGION = "us-east-1"
REGISTRY_HOST = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/ecr-pull"
REPOSITORIES = ("team/app", "team/other")


@dataclass(frozen=True)
class AwsKeyPair:
    """An IAM user's access key created in moto (fake credentials to a fake AWS)."""

    access_key_id: str
    secret_access_key: str


@dataclass(frozen=True)
class AwsWorld:
    """The moto server and the principals seeded into it."""

    server: MotoServer
    recording: Path
    puller: AwsKeyPair  # GetAuthorizationToken + pull actions + sts:AssumeRole
    token_only: AwsKeyPair  # GetAuthorizationToken only: cannot pull
    nobody: AwsKeyPair  # no policy at all

    @property
    def url(self) -> str:
        return self.server.url

    def api(self, path: str, data: bytes | None = None) -> str:
        """POST/GET moto's control API (never authenticated)."""
        with requests.Session() as session:
            session.trust_env = False
            url = f"{self.url}/moto-api/{path}"
            response = (
                session.post(url, data=data, timeout=10)
                if data is not None
                else (session.get(url, timeout=10))
            )
            response.raise_for_status()
            return response.text

    def reset_recording(self) -> None:
        self.api("recorder/reset-recording", b"")

    def recorded(self) -> list[dict[str, Any]]:
        """Every request moto served since the last reset, with the body decoded."""
        entries = []
        for line in self.recording.read_text().splitlines():
            entry = json.loads(line)
            body = entry.get("body") or ""
            if entry.get("body_encoded"):
                body = base64.b64decode(body).decode()
            entry["body"] = body
            entries.append(entry)
        return entries

    def calls(self, action: str) -> list[dict[str, Any]]:
        """Recorded calls of one API action (JSON protocol target or query Action)."""
        found = []
        for entry in self.recorded():
            headers = {k.lower(): v for k, v in entry["headers"].items()}
            target = headers.get("x-amz-target", "")
            form = parse_qs(entry["body"]) if "Action=" in entry["body"] else {}
            if target.endswith(f".{action}") or form.get("Action") == [action]:
                entry["form"] = form
                found.append(entry)
        return found


def _client(url: str, service: str) -> Any:
    return boto3.client(
        service,
        region_name=REGION,
        endpoint_url=url,
        aws_access_key_id="AKIAIOSFODNN7EXAMPLE",
        aws_secret_access_key="seed-only",
        config=Config(retries={"max_attempts": 1}),
    )


def _user(iam: Any, name: str, actions: list[str]) -> AwsKeyPair:
    iam.create_user(UserName=name)
    if actions:
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}],
        }
        iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return AwsKeyPair(key["AccessKeyId"], key["SecretAccessKey"])


def _seed(url: str) -> tuple[AwsKeyPair, AwsKeyPair, AwsKeyPair]:
    iam = _client(url, "iam")
    pull = [
        "ecr:GetAuthorizationToken",
        "ecr:BatchGetImage",
        "ecr:GetDownloadUrlForLayer",
        "ecr:BatchCheckLayerAvailability",
        "sts:AssumeRole",
    ]
    puller = _user(iam, "puller", pull)
    token_only = _user(iam, "token-only", ["ecr:GetAuthorizationToken"])
    nobody = _user(iam, "nobody", [])
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/puller"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    iam.create_role(RoleName="ecr-pull", AssumeRolePolicyDocument=json.dumps(trust))
    role_policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "ecr:*", "Resource": "*"}],
    }
    iam.put_role_policy(RoleName="ecr-pull", PolicyName="p", PolicyDocument=json.dumps(role_policy))
    ecr = _client(url, "ecr")
    for name in REPOSITORIES:
        ecr.create_repository(repositoryName=name)
    return puller, token_only, nobody


def start_aws(workdir: Path) -> AwsWorld:
    """Start moto (recording into `workdir`) and seed it."""
    recording = workdir / "requests.jsonl"
    recording.touch()
    # moto reads where to record from its environment; keep the variable out of ours.
    with mock.patch.dict(os.environ, {"MOTO_RECORDER_FILEPATH": str(recording)}):
        server = MotoServer.start(workdir)
    try:
        world = AwsWorld(server, recording, *_seed(server.url))
        world.api("recorder/start-recording", b"")
    except BaseException:
        server.stop()
        raise
    return world
