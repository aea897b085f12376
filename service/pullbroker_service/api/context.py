"""The servicer context type every handler receives (grpc.aio's, over protobuf messages)."""

from __future__ import annotations

from typing import TypeAlias

import grpc
from google.protobuf.message import Message

Context: TypeAlias = grpc.aio.ServicerContext[Message, Message]
