"""Completion events and their signatures, without any network."""

from __future__ import annotations

import json

from pipeline.engine.notify import completion_event, sign, verify_signature

DOC = {
    "id": "abc",
    "status": "done",
    "reason": None,
    "source": {"container": "uploads", "name": "holiday/gps.jpg", "etag": '"0x1"', "size": 9},
    "gps": {"lat": 48.8584, "lon": 2.2945, "alt": 35.0},
    "exif": {"make": "Darkroom Test"},
    "analysis": {
        "tags": [{"name": "tower", "score": 0.9}],
        "objects": [
            {"name": "person", "score": 0.8, "box": [1, 2, 3, 4]},
            {"name": "person", "score": 0.7, "box": [5, 6, 7, 8]},
        ],
        "faces": [{"box": [1, 2, 3, 4], "score": 0.9}],
        "text": {"full": "", "lines": []},
        "moderation": {"score": 0.01, "verdict": "safe"},
    },
    "derived": {"thumbnail": {"container": "derived", "name": "abc/thumbnail.jpg", "size": 1}},
    "published": {"container": "published", "name": "abc/published.jpg", "size": 2},
    "updated_at": "2026-11-22T00:00:00Z",
}


def test_event_summarises_the_image_and_references_its_blobs():
    event = completion_event(DOC)
    assert event["image_id"] == "abc" and event["status"] == "done"
    assert event["summary"] == {
        "caption": None,  # the caption capability (off by default) has its key too
        "tags": ["tower"],
        "objects": ["person"],
        "face_count": 1,
        "text_present": False,
        "moderation": "safe",
    }
    assert event["blobs"]["published"] == {"container": "published", "name": "abc/published.jpg"}


def test_event_never_carries_the_gps_position_or_camera():
    text = json.dumps(completion_event(DOC))
    assert "48.85" not in text and "2.294" not in text and '"lat"' not in text
    assert "Darkroom Test" not in text


def test_event_id_is_stable_so_subscribers_can_drop_duplicates():
    assert completion_event(DOC)["id"] == completion_event(dict(DOC))["id"]
    assert completion_event({**DOC, "status": "failed"})["id"] != completion_event(DOC)["id"]


def test_signature_verifies_and_forgeries_do_not():
    body = b'{"image_id":"abc"}'
    header = sign("s3cret", body, timestamp=1_700_000_000)
    assert verify_signature("s3cret", body, header, now=1_700_000_010)
    assert not verify_signature("s3cret", body + b" ", header, now=1_700_000_010)
    assert not verify_signature("other", body, header, now=1_700_000_010)
    assert not verify_signature("s3cret", body, header.replace("v1=", "v1=0"), now=1_700_000_010)
    assert not verify_signature("s3cret", body, None)
    assert not verify_signature("s3cret", body, "garbage")


def test_an_old_signature_is_refused_as_a_replay():
    body = b"{}"
    header = sign("s3cret", body, timestamp=1_700_000_000)
    assert not verify_signature("s3cret", body, header, now=1_700_000_000 + 301)


SECRETS = {
    "DARKROOM_WEBHOOK_URL": "https://hookuser:hookpass@127.0.0.1:9/hook?sig=tok3n",
    "DARKROOM_WEBHOOK_SECRET": "whsec-0123",
    "DARKROOM_AZURE_VISION_KEY": "vision-key-4567",
    "DARKROOM_EVENTGRID_TOPIC_KEY": "eg-key-89ab",
    "DARKROOM_STORAGE": (
        "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=stor4ge-key;"
        "BlobEndpoint=http://127.0.0.1:1/a;QueueEndpoint=http://127.0.0.1:2/a;"
    ),
}
LEAKS = ("hookpass", "tok3n", "whsec-0123", "vision-key-4567", "eg-key-89ab", "stor4ge-key")


def test_settings_never_print_their_secrets():
    from pipeline.settings import Settings

    shown = repr(Settings.from_env(SECRETS))
    assert [leak for leak in LEAKS if leak in shown] == []


def test_a_failed_webhook_is_logged_without_its_credentials(caplog):
    from pipeline.engine.notify import Notifier
    from pipeline.settings import Settings
    from pipeline.stores.azure_clients import AzureClients

    settings = Settings.from_env({**SECRETS, "DARKROOM_WEBHOOK_ATTEMPTS": "1"})
    notifier = Notifier(AzureClients(settings))
    with caplog.at_level("WARNING", logger="darkroom"):
        outcome = notifier._webhook(b"{}")  # port 9 refuses: the failure path
    assert outcome["status"] == "failed"
    logged = caplog.text
    assert "https://127.0.0.1:9/hook?…" in logged
    assert [leak for leak in LEAKS if leak in logged or leak in str(outcome)] == []


def test_untrusted_names_print_without_control_characters():
    from pipeline.observability.logsafe import printable

    assert printable("dog.jpg") == "dog.jpg" and printable("café/été.jpg") == "café/été.jpg"
    forged = printable("ctrl\x01\x1b[31mred.jpg\nFAKE LOG LINE")
    assert forged.isprintable() and "\x1b" not in forged and "\n" not in forged
