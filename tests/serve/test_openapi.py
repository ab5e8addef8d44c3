"""The server's /openapi.json against the server itself: every status documented, OpenAI's error shape, and a
seeded, bounded schemathesis run (examples, coverage -- undocumented methods included -- and fuzzing phases)
with every check but ``positive_data_acceptance``: a schema cannot say "audio", so the valid-looking files
schemathesis makes are undecodable and rightly answered 400."""

from __future__ import annotations

import json
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")
pytest.importorskip("uvicorn")
schemathesis = pytest.importorskip("schemathesis")

from schemathesis.config import SchemathesisConfig  # noqa: E402
from serve_harness import KEY, MODEL, FakeBackend, call, running  # noqa: E402

from speechtl.serve.app import create_app  # noqa: E402

TRANSCRIBE = "/v1/audio/transcriptions"
SCHEMATHESIS = {
    "seed": 20260101,
    "generation": {"mode": "all", "max-examples": 100, "database": "none"},
    "headers": {"Authorization": f"Bearer {KEY}"},
    "checks": {"positive_data_acceptance": {"enabled": False}},
    "phases": {"stateful": {"enabled": False}},
}
CASES: list[str] = []  # "METHOD path -> status" of every case schemathesis sent


def test_every_status_is_documented_and_422_is_not():
    app = create_app(FakeBackend(), api_key=KEY, model_id=MODEL)
    with running(app) as port:
        status, body, _ = call(port, "/openapi.json", key=None)
    assert status == 200
    schema = json.loads(body)
    documented = {(path, method): set(op["responses"]) for path, item in schema["paths"].items()
                  for method, op in item.items()}
    assert documented == {
        ("/health", "get"): {"200", "400", "413"},
        ("/v1/models", "get"): {"200", "400", "401", "413"},
        (TRANSCRIBE, "post"): {"200", "400", "401", "404", "408", "413", "415", "500", "503"},
    }
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    assert schema["paths"][TRANSCRIBE]["post"]["security"] == [{"bearer": []}]
    assert schema["paths"][TRANSCRIBE]["post"]["responses"]["503"]["headers"]["Retry-After"]


APP = create_app(FakeBackend(), api_key=KEY, model_id=MODEL, max_upload_bytes=200_000, max_duration_s=5.0,
                 queue_size=4)
# the document is read from the app's /openapi.json in process (pytest collects the cases before any server
# runs); the cases go to the same app served by uvicorn (the ``served`` fixture)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP, config=SchemathesisConfig.from_dict(SCHEMATHESIS))


@pytest.fixture(scope="module")
def served():
    started = time.monotonic()
    with running(APP) as p:
        yield f"http://127.0.0.1:{p}"
    statuses = sorted({case.rsplit(" ", 1)[1] for case in CASES})
    print(f"\nschemathesis: {len(CASES)} cases in {time.monotonic() - started:.1f} s, statuses {statuses}")


@schema.parametrize()
def test_the_server_keeps_to_its_openapi_document(case, served):
    response = case.call_and_validate(base_url=served)
    CASES.append(f"{case.method} {case.path} -> {response.status_code}")
    assert len(CASES) <= 600  # bounded: a few hundred cases at most
