"""`faces` from Azure AI Face detection (`DARKROOM_FACES_PROVIDER=face`), through the real HTTP
client against a loopback server speaking the service's REST protocol (Face API v1.2, GA):
`POST /face/v1.2/detect` with the image as octet-stream, the documented answer (an array of
faceRectangle + the 27 named faceLandmarks), the documented error body
(`{"error": {"code", "message"}}`), the key header, busy answers, timeouts, and the key in no
log, result or error. Then a face from this provider through our recognition (alignment and
embedding on our model), which needs the Face API's landmarks in OUR convention."""

from __future__ import annotations

import contextlib
import datetime
import io
import ipaddress
import json
import logging
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from pipeline.framework.step_api import StepFailed, TryLater
from pipeline.settings import Settings
from pipeline.vision.analysis import to_original
from pipeline.vision.base import ModelUnavailable
from pipeline.vision.providers import analyzer_for, check_configuration, fix_for
from tests.harness import FIXTURES

KEY = "face-key-0123456789abcdef0123"
QUERY = "detectionModel=detection_03&returnFaceId=false&returnFaceLandmarks=true"

# One face exactly as the service answered it (Vision Studio, detection_01; recorded in a public
# write-up), all 27 landmarks: the shape every face below copies, moved and scaled.
SAMPLE_RECTANGLE = {"width": 197, "height": 263, "left": 219, "top": 98}
SAMPLE_LANDMARKS = {
    "pupilLeft": {"x": 257.7, "y": 208.6},
    "pupilRight": {"x": 341.4, "y": 196.5},
    "noseTip": {"x": 289.8, "y": 244.9},
    "mouthLeft": {"x": 272.3, "y": 301.9},
    "mouthRight": {"x": 340.8, "y": 293.3},
    "eyebrowLeftOuter": {"x": 232.5, "y": 191.8},
    "eyebrowLeftInner": {"x": 271.6, "y": 183.8},
    "eyeLeftOuter": {"x": 244.2, "y": 211.7},
    "eyeLeftTop": {"x": 258.1, "y": 203.5},
    "eyeLeftBottom": {"x": 256.3, "y": 212.3},
    "eyeLeftInner": {"x": 272.2, "y": 206.8},
    "eyebrowRightInner": {"x": 311.9, "y": 178.6},
    "eyebrowRightOuter": {"x": 367.8, "y": 179.4},
    "eyeRightInner": {"x": 326.6, "y": 199.2},
    "eyeRightTop": {"x": 338.7, "y": 191.4},
    "eyeRightBottom": {"x": 342.4, "y": 200.2},
    "eyeRightOuter": {"x": 357.8, "y": 195.4},
    "noseRootLeft": {"x": 282.8, "y": 208.0},
    "noseRootRight": {"x": 306.7, "y": 203.3},
    "noseLeftAlarTop": {"x": 276.6, "y": 238.4},
    "noseRightAlarTop": {"x": 315.8, "y": 232.9},
    "noseLeftAlarOutTip": {"x": 272.5, "y": 257.7},
    "noseRightAlarOutTip": {"x": 326.0, "y": 252.4},
    "upperLipTop": {"x": 302.2, "y": 289.7},
    "upperLipBottom": {"x": 301.4, "y": 295.5},
    "underLipTop": {"x": 301.4, "y": 298.0},
    "underLipBottom": {"x": 302.7, "y": 306.3},
}


def face_at(left: float, top: float, scale: float) -> dict:
    """The sample face moved to (left, top) and scaled, rounded as the service rounds."""
    r = SAMPLE_RECTANGLE

    def moved(x: float, y: float) -> dict:
        return {
            "x": round(left + (x - r["left"]) * scale, 1),
            "y": round(top + (y - r["top"]) * scale, 1),
        }

    return {
        "faceRectangle": {
            "top": round(top),
            "left": round(left),
            "width": round(r["width"] * scale),
            "height": round(r["height"] * scale),
        },
        "faceLandmarks": {name: moved(p["x"], p["y"]) for name, p in SAMPLE_LANDMARKS.items()},
    }


# Four faces in a 960x720 image, largest first as the service ranks them; the last one is cut by
# the right edge (its box and its left eye reach past x = 960).
FACES = [
    face_at(219, 98, 1.0),
    face_at(600, 150, 0.5),
    face_at(900, 400, 0.5),
    face_at(40, 500, 0.3),
]
PIXELS = np.full((720, 960, 3), 128, np.uint8)


def expected_points(face: dict) -> list[tuple[float, float]]:
    """Our convention from the service's names: right eye, left eye, nose tip, mouth centre."""
    p = face["faceLandmarks"]
    mouth = [p[n] for n in ("mouthLeft", "mouthRight", "upperLipBottom", "underLipTop")]
    return [
        (p["pupilLeft"]["x"], p["pupilLeft"]["y"]),
        (p["pupilRight"]["x"], p["pupilRight"]["y"]),
        (p["noseTip"]["x"], p["noseTip"]["y"]),
        (sum(m["x"] for m in mouth) / 4, sum(m["y"] for m in mouth) / 4),
    ]


class FaceService:
    """Loopback Azure AI Face: POST /face/v1.2/detect → `answers` in turn, else `faces`."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[dict] = []
        self.answers: list[tuple[int, dict, object]] = []
        self.faces: list[dict] = FACES
        self.delay = 0.0
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                service.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body}
                )
                if service.delay:
                    time.sleep(service.delay)
                status, headers, answer = (
                    service.answers.pop(0) if service.answers else (200, {}, service.faces)
                )
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(data)  # the timeout test's client has gone

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def service():
    running = FaceService()
    yield running
    running.close()


def detector(service: FaceService, **extra: str):
    settings = Settings.from_env(
        {
            "DARKROOM_FACES_PROVIDER": "face",
            "DARKROOM_FACE_ENDPOINT": service.url,
            "DARKROOM_FACE_KEY": KEY,
            **extra,
        }
    )
    return analyzer_for("faces", settings.analysis)


# ----------------------------------------------------------------------------- the mapping


def test_faces_boxes_and_landmarks_in_our_convention_scaled_to_the_original(service, caplog):
    caplog.set_level(logging.DEBUG)
    analyzer = detector(service)
    faces = analyzer.predict(PIXELS)
    assert analyzer.ident == "azure-face-detection_03@v1.2"

    (request,) = service.requests
    assert request["path"] == f"/face/v1.2/detect?{QUERY}"
    assert request["headers"]["Ocp-Apim-Subscription-Key"] == KEY
    assert request["headers"]["Content-Type"] == "application/octet-stream"
    sent = Image.open(io.BytesIO(request["body"]))
    assert sent.format == "JPEG" and sent.size == (960, 720)  # the analysis image, as it is

    assert len(faces) == 4  # in the service's order, largest first
    for i in (0, 1, 3):  # the faces inside the image: as the service placed them
        face, answer = faces[i], FACES[i]
        r = answer["faceRectangle"]
        assert face.box == (r["left"], r["top"], r["width"], r["height"])
        assert np.array(face.landmarks) == pytest.approx(np.array(expected_points(answer)))
        assert face.score == 1.0  # the service gives no confidence: "reported by it"
    # Our convention, as BlazeFace's: the subject's right eye is on the image's left, the eyes
    # above the nose, the nose above the mouth.
    right_eye, left_eye, nose, mouth = faces[0].landmarks
    assert right_eye[0] < nose[0] < left_eye[0]
    assert max(right_eye[1], left_eye[1]) < nose[1] < mouth[1]
    # The face cut by the edge: box and points clamped to the image, as BlazeFace's.
    x, y, w, h = faces[2].box
    assert (x, y, x + w, h) == (900, 400, 960, 132)
    assert faces[2].landmarks[1][0] == 960.0

    # The analyze step writes every box and landmark in the ORIGINAL image's pixels.
    original = to_original(faces, 2.0, 2.0)  # the original was 1920x1440
    assert original[0]["box"] == [438.0, 196.0, 394.0, 526.0]
    assert original[0]["landmarks"][0] == pytest.approx([515.4, 417.2])

    assert KEY not in caplog.text and KEY not in json.dumps(original)


def test_no_face_is_an_empty_list(service):
    service.faces = []
    assert detector(service).predict(PIXELS) == []


def test_a_tiny_image_goes_as_bmp_and_one_too_small_for_a_face_is_not_sent(service):
    service.faces = []
    analyzer = detector(service)
    flat = np.full((40, 40, 3), 200, np.uint8)  # as JPEG well under the service's 1 KB minimum
    assert analyzer.predict(flat) == []
    (request,) = service.requests
    assert request["body"][:2] == b"BM" and len(request["body"]) >= 1024
    assert analyzer.predict(np.full((30, 400, 3), 200, np.uint8)) == []  # < 36 px: no face fits
    assert len(service.requests) == 1


def test_detection_01_can_be_chosen_and_detection_02_cannot():
    settings = Settings.from_env(
        {"DARKROOM_FACES_PROVIDER": "face", "DARKROOM_FACE_DETECTION_MODEL": "detection_01"}
    )
    assert settings.analysis.face.detection_model == "detection_01"
    with pytest.raises(ValueError, match="DARKROOM_FACE_DETECTION_MODEL"):
        Settings.from_env({"DARKROOM_FACE_DETECTION_MODEL": "detection_02"})  # no landmarks


# ----------------------------------------------------------------------------- failures


def test_busy_is_transient_with_the_services_wait(service):
    service.answers.append(
        (
            429,
            {"Retry-After": "7"},
            {"error": {"code": "429", "message": "Rate limit is exceeded. Try again later."}},
        )
    )
    analyzer = detector(service)
    with pytest.raises(TryLater, match="Rate limit is exceeded") as busy:
        analyzer.predict(PIXELS)
    assert busy.value.retry_after == 7.0 and analyzer.is_transient(busy.value)
    service.answers.append((500, {}, {"error": {"code": "InternalServerError", "message": "x"}}))
    with pytest.raises(RuntimeError) as failed:
        analyzer.predict(PIXELS)
    assert analyzer.is_transient(failed.value)


def test_a_refused_image_is_a_recorded_failure_with_the_services_words(service):
    service.answers.append(
        (
            400,
            {},
            {
                "error": {
                    "code": "InvalidImage",
                    "message": "Decoding error, image format unsupported.",
                }
            },
        )
    )
    analyzer = detector(service)
    with pytest.raises(StepFailed, match="InvalidImage: Decoding error") as refused:
        analyzer.predict(PIXELS)
    assert not analyzer.is_transient(refused.value)  # the analyze step records it, no retry
    service.answers.append(
        (400, {}, {"error": {"code": "InvalidImageSize", "message": "Image size is too big."}})
    )
    with pytest.raises(StepFailed, match="Image size is too big"):
        analyzer.predict(PIXELS)


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (
            401,
            "401",
            "Access denied due to invalid subscription key or wrong API endpoint. Make sure to "
            "provide a valid key for an active subscription and use a correct regional API "
            "endpoint for your resource.",
        ),
        (403, "PermissionDenied", "The principal does not have access to the data action."),
    ],
)
def test_refused_credentials_are_a_configuration_error_naming_the_fix(
    service, caplog, status, code, message
):
    caplog.set_level(logging.DEBUG)
    service.answers.append((status, {}, {"error": {"code": code, "message": message}}))
    analyzer = detector(service)
    with pytest.raises(ModelUnavailable, match="DARKROOM_FACE_KEY") as refused:
        analyzer.predict(PIXELS)
    assert f"HTTP {status}" in str(refused.value) and message[:30] in str(refused.value)
    assert not analyzer.is_transient(refused.value)
    assert KEY not in str(refused.value) and KEY not in caplog.text


def test_a_timeout_is_transient(service):
    service.delay = 2.5
    analyzer = detector(service, DARKROOM_FACE_TIMEOUT="1")
    started = time.monotonic()
    with pytest.raises(TryLater, match="did not answer") as late:
        analyzer.predict(PIXELS)
    assert analyzer.is_transient(late.value) and time.monotonic() - started < 2.4


def test_without_an_endpoint_the_start_up_check_names_the_setting_and_the_fix():
    settings = Settings.from_env({"DARKROOM_FACES_PROVIDER": "face"})
    with pytest.raises(ModelUnavailable, match="DARKROOM_FACE_ENDPOINT") as broken:
        check_configuration(settings.analysis)
    assert "Cognitive Services User" in str(broken.value)
    assert "DARKROOM_FACES_PROVIDER=local" in fix_for("faces", "face")
    # Keyless (the app's identity) needs TLS: a token never travels in clear.
    settings = Settings.from_env(
        {"DARKROOM_FACES_PROVIDER": "face", "DARKROOM_FACE_ENDPOINT": "http://face.example"}
    )
    with pytest.raises(ModelUnavailable, match="https://"):
        check_configuration(settings.analysis)


# ----------------------------------------------------------------------------- Entra ID


def _self_signed(tmp_path) -> tuple[ssl.SSLContext, str]:
    """A TLS context for 127.0.0.1 and the CA file that trusts it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context, str(cert_file)


class FakeCredential:
    """What the app's identity gives: a token for the scope asked."""

    def __init__(self) -> None:
        self.scopes: list[tuple] = []

    def get_token(self, *scopes, **kwargs):
        from azure.core.credentials import AccessToken

        self.scopes.append(scopes)
        return AccessToken("entra-token-for-face", int(time.time()) + 3600)


def test_without_a_key_the_apps_identity_signs_in_with_a_bearer_token(tmp_path, monkeypatch):
    context, ca_file = _self_signed(tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca_file)  # azure-core's requests transport
    credential = FakeCredential()
    monkeypatch.setattr("pipeline.stores.azure_clients.default_credential", lambda: credential)
    service = FaceService(tls=context)
    try:
        settings = Settings.from_env(
            {"DARKROOM_FACES_PROVIDER": "face", "DARKROOM_FACE_ENDPOINT": service.url}
        )
        faces = analyzer_for("faces", settings.analysis).predict(PIXELS)
    finally:
        service.close()
    assert len(faces) == 4
    (request,) = service.requests
    assert request["headers"]["Authorization"] == "Bearer entra-token-for-face"
    assert "Ocp-Apim-Subscription-Key" not in request["headers"]
    assert credential.scopes == [("https://cognitiveservices.azure.com/.default",)]


# ----------------------------------------------------------------------------- recognition


def portrait_answer(swap_eyes: bool = False) -> list[dict]:
    """What the Face API would answer for tests/fixtures/portrait.jpg: the face's hand-drawn
    box, and 27 landmarks laid out around the four keypoints recorded with the embedder's
    reference (face-embedder-reference.json: right eye, left eye, nose tip, mouth)."""
    reference = json.loads((FIXTURES / "face-embedder-reference.json").read_text())
    right_eye, left_eye, nose, mouth = (np.array(p, float) for p in reference["landmarks"])
    d = float(np.linalg.norm(left_eye - right_eye))
    u = (left_eye - right_eye) / d  # along the eyes, towards the image's right
    v = np.array([-u[1], u[0]])  # down the face

    def at(base, along: float, down: float) -> dict:
        x, y = base + along * d * u + down * d * v
        return {"x": round(float(x), 1), "y": round(float(y), 1)}

    eyes_middle = (right_eye + left_eye) / 2
    image_left_eye, image_right_eye = (left_eye, right_eye) if swap_eyes else (right_eye, left_eye)
    landmarks = {
        "pupilLeft": at(image_left_eye, 0, 0),
        "pupilRight": at(image_right_eye, 0, 0),
        "noseTip": at(nose, 0, 0),
        "mouthLeft": at(mouth, -0.45, 0),
        "mouthRight": at(mouth, 0.45, 0),
        "eyebrowLeftOuter": at(right_eye, -0.35, -0.3),
        "eyebrowLeftInner": at(right_eye, 0.2, -0.35),
        "eyeLeftOuter": at(right_eye, -0.2, 0),
        "eyeLeftTop": at(right_eye, 0, -0.06),
        "eyeLeftBottom": at(right_eye, 0, 0.06),
        "eyeLeftInner": at(right_eye, 0.2, 0),
        "eyebrowRightInner": at(left_eye, -0.2, -0.35),
        "eyebrowRightOuter": at(left_eye, 0.35, -0.3),
        "eyeRightInner": at(left_eye, -0.2, 0),
        "eyeRightTop": at(left_eye, 0, -0.06),
        "eyeRightBottom": at(left_eye, 0, 0.06),
        "eyeRightOuter": at(left_eye, 0.2, 0),
        "noseRootLeft": at(eyes_middle, -0.12, 0.1),
        "noseRootRight": at(eyes_middle, 0.12, 0.1),
        "noseLeftAlarTop": at(nose, -0.2, -0.15),
        "noseRightAlarTop": at(nose, 0.2, -0.15),
        "noseLeftAlarOutTip": at(nose, -0.28, 0.05),
        "noseRightAlarOutTip": at(nose, 0.28, 0.05),
        "upperLipTop": at(mouth, 0, -0.12),
        "upperLipBottom": at(mouth, 0, -0.03),
        "underLipTop": at(mouth, 0, 0.03),
        "underLipBottom": at(mouth, 0, 0.15),
    }
    rectangle = {"top": 72, "left": 180, "width": 88, "height": 104}  # PROVENANCE.md
    return [{"faceRectangle": rectangle, "faceLandmarks": landmarks}]


def test_a_face_from_this_provider_is_recognised_by_our_model(service):
    """The recognize step's own path (pipeline.people.face_search.judge: alignment on our
    landmarks, the quality gate; then the embedding) on a face the Face API reported in a real
    photo: the same descriptor as the face BlazeFace found (the embedder's recorded reference),
    far inside the same-person distance. The Face API's left/right named the other way round
    would turn the face upside down, and the gate refuses it."""
    from pipeline.people.face_search import judge
    from pipeline.vision.local.face_embedding import SAME_PERSON_DISTANCE, FaceEmbedder, distance

    reference = json.loads((FIXTURES / "face-embedder-reference.json").read_text())
    pixels = np.asarray(Image.open(FIXTURES / "portrait.jpg").convert("RGB"))  # 512x512
    service.faces = portrait_answer()
    analyzer = detector(service)
    (face,) = analyzer.predict(pixels)
    assert np.array(face.landmarks) == pytest.approx(np.array(reference["landmarks"]), abs=0.06)

    # As the document holds it (original pixels: the original was 1024x1024), and as the
    # recognize step reads it back onto the analysis image.
    (stored,) = to_original([face], 2.0, 2.0)
    box = tuple(v / 2 for v in stored["box"])
    landmarks = [(x / 2, y / 2) for x, y in stored["landmarks"]]

    embedder = FaceEmbedder()
    usable, reason, chip = judge(embedder, pixels, box, landmarks)
    assert usable, reason
    (vector,) = embedder.embed([chip])
    assert distance(vector, np.array(reference["descriptor"])) < 0.05 < SAME_PERSON_DISTANCE

    service.faces = portrait_answer(swap_eyes=True)
    (swapped,) = analyzer.predict(pixels)
    usable, reason, _ = judge(embedder, pixels, tuple(swapped.box), swapped.landmarks)
    assert not usable and "tilted" in reason
