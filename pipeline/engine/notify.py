"""Tell downstream systems an image is finished, so nobody has to poll the database.

Three channels, from the final document:
- a message on the `results` queue, always (anything can subscribe, locally too);
- an Event Grid custom event, when a topic endpoint is configured (Azure);
- a webhook POST signed with HMAC-SHA256, when a URL is configured; retried with backoff, and a
  webhook that stays down never fails the image — the outcome is recorded in the document.
The event carries ids, status, a summary and blob references, never the GPS position; and
`summaries`, one line per step from its manifest's `summarize` (GPS and OCR text hidden from
them).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import urllib.error
import urllib.request
from typing import Any

from pipeline.framework.document import summaries
from pipeline.observability.logsafe import redact_url
from pipeline.stores.azure_clients import AzureClients, default_credential
from pipeline.stores.storage import send_to_queue
from pipeline.vision.capabilities import capabilities

log = logging.getLogger("darkroom.notify")

EVENT_TYPE = "Darkroom.ImageProcessed"
SIGNATURE_HEADER = "X-Darkroom-Signature"
SIGNATURE_TOLERANCE_SECONDS = 300


def private_fields() -> tuple[str, ...]:
    """What no step's summary line in an event may see: the position, and every capability that
    declares itself private (the OCR text: the event says only whether there is text, which
    may be a name or a licence plate)."""
    return ("gps", *(f"analysis.{c.name}" for c in capabilities().values() if c.private))


def _ref(blob: dict | None) -> dict | None:
    if not blob or "name" not in blob:
        return None
    return {"container": blob["container"], "name": blob["name"]}


def completion_event(document: dict) -> dict[str, Any]:
    """The event for a finished image: what a subscriber needs to act, nothing private."""
    analysis = document.get("analysis") or {}
    derived = document.get("derived") or {}
    # Same on redelivery (steps are deterministic: same derivative, same record), so duplicates
    # can be dropped; different when the derivative was made again (consent withdrawn: faces
    # hidden), so a subscriber that dropped duplicates still learns of the new one.
    published = json.dumps(document.get("published"), sort_keys=True)
    identity = f"{document['id']}|{document['source']['etag']}|{document['status']}|{published}"
    return {
        "id": hashlib.sha256(identity.encode()).hexdigest()[:32],
        "type": EVENT_TYPE,
        "image_id": document["id"],
        "status": document["status"],
        "reason": document.get("reason"),
        "source": {
            "container": document["source"]["container"],
            "name": document["source"]["name"],
        },
        # Each capability's own entry (pipeline.vision.capabilities: `event`).
        "summary": {
            key: value(analysis.get(c.name))
            for c in capabilities().values()
            if c.event
            for key, value in [c.event]
        },
        # One line per step for people (e.g. analyze: "1 face · dog 0.91 · moderation: safe").
        "summaries": summaries(document, hide=private_fields()),
        "blobs": {
            "published": _ref(document.get("published")),
            "thumbnail": _ref(derived.get("thumbnail")),
            "analysis": _ref(derived.get("analysis")),
            "archive": _ref(document.get("archive")),
        },
        "finished_at": document.get("updated_at"),
    }


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """`t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`: the time is signed too, so a
    captured request cannot be replayed later."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify_signature(
    secret: str,
    body: bytes,
    header: str | None,
    tolerance: int = SIGNATURE_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """What a receiver runs: the signature matches the body and is recent."""
    if not header:
        return False
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def _retryable(status: int) -> bool:
    return status in (408, 425, 429) or status >= 500


class Notifier:
    def __init__(self, azure: AzureClients) -> None:
        self.azure = azure
        self.policy = azure.settings.publish
        self._eventgrid = None

    @property
    def results_queue(self) -> str:
        return self.azure.settings.results_queue_name()

    def publish(self, document: dict) -> dict[str, dict]:
        """Send the completion event on every configured channel; returns each outcome."""
        event = completion_event(document)
        body = json.dumps(event, sort_keys=True, separators=(",", ":")).encode()
        outcomes = {}
        send_to_queue(  # a failure here is retried
            self.azure, self.results_queue, body, time_to_live=self.policy.results_ttl_seconds
        )
        outcomes["results_queue"] = {"status": "sent", "queue": self.results_queue}
        if self.policy.eventgrid_endpoint:
            outcomes["event_grid"] = self._event_grid(event)
        if self.policy.webhook_url:
            outcomes["webhook"] = self._webhook(body)
        return outcomes

    def _event_grid(self, event: dict) -> dict:
        try:
            from azure.core.credentials import AzureKeyCredential
            from azure.eventgrid import EventGridEvent, EventGridPublisherClient

            if self._eventgrid is None:
                credential = (
                    AzureKeyCredential(self.policy.eventgrid_key)
                    if self.policy.eventgrid_key
                    else default_credential()
                )
                self._eventgrid = EventGridPublisherClient(
                    self.policy.eventgrid_endpoint, credential
                )
            self._eventgrid.send(
                EventGridEvent(
                    subject=f"/images/{event['image_id']}",
                    event_type=EVENT_TYPE,
                    data=event,
                    data_version="1.0",
                    id=event["id"],
                )
            )
            return {"status": "sent"}
        except Exception as exc:  # a notification channel never fails the image
            log.warning("event grid publish for %s failed: %s", event["image_id"], exc)
            return {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:300]}

    def _webhook(self, body: bytes) -> dict:
        attempts, error = 0, ""
        while attempts < self.policy.webhook_attempts:
            attempts += 1
            request = urllib.request.Request(
                self.policy.webhook_url,
                data=body,
                method="POST",
                headers={
                    "Content-Type": "application/json",
                    "User-Agent": "darkroom",
                    SIGNATURE_HEADER: sign(self.policy.webhook_secret, body),
                },
            )
            try:
                with urllib.request.urlopen(request, timeout=self.policy.webhook_timeout) as r:
                    return {"status": "delivered", "attempts": attempts, "http_status": r.status}
            except urllib.error.HTTPError as exc:
                error = f"HTTP {exc.code}"
                if not _retryable(exc.code):
                    break
            except (urllib.error.URLError, TimeoutError, OSError) as exc:
                error = f"{type(exc).__name__}: {exc}"
            if attempts < self.policy.webhook_attempts:
                time.sleep(0.5 * 2 ** (attempts - 1))
        log.warning(
            "webhook %s failed after %d attempts: %s",
            redact_url(self.policy.webhook_url),
            attempts,
            error,
        )
        return {"status": "failed", "attempts": attempts, "error": error[:300]}
