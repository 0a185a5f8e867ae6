"""Claim check: messages too large for a queue travel as a blob and a small pointer.

The blob name is derived from the content, so a redelivered step re-writes the same blob rather
than adding one; claims are kept (not deleted on read) because at-least-once delivery may hand the
same pointer to a step twice. A lifecycle rule on the claims container expires them.
"""

from __future__ import annotations

import hashlib
import json

from azure.core.exceptions import ResourceNotFoundError

from pipeline.framework.contract import (
    MAX_MESSAGE_JSON_BYTES,
    ClaimCheck,
    InvalidMessage,
    PipelineMessage,
)
from pipeline.stores.azure_clients import AzureClients
from pipeline.stores.storage import get_blob, put_blob


def pack(clients: AzureClients, message: PipelineMessage) -> bytes:
    """JSON for the queue: the message itself, or a claim check when it would not fit."""
    body = message.to_json()
    if len(body) <= MAX_MESSAGE_JSON_BYTES:
        return body
    digest = hashlib.sha256(body).hexdigest()[:24]
    name = f"{message.id}/{message.step}-{digest}.json"
    put_blob(clients, clients.settings.claims_container, name, body, "application/json")
    return (
        ClaimCheck(claim_check=name, id=message.id, step=message.step)
        .model_dump_json(by_alias=True)
        .encode()
    )


def unpack(clients: AzureClients, body: bytes) -> PipelineMessage:
    try:
        envelope = json.loads(body)
    except ValueError as exc:
        raise InvalidMessage(f"message is not JSON: {exc}") from exc
    if not isinstance(envelope, dict) or "claim_check" not in envelope:
        return PipelineMessage.from_json(body)
    try:
        claim = ClaimCheck.model_validate(envelope)
    except ValueError as exc:
        raise InvalidMessage(f"malformed claim check: {exc}") from exc
    try:
        full = get_blob(clients, clients.settings.claims_container, claim.claim_check)
    except ResourceNotFoundError as exc:
        raise InvalidMessage(f"claim check blob {claim.claim_check} is missing") from exc
    return PipelineMessage.from_json(full)
