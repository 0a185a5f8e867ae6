"""Azure Functions entry point: wiring only. The work lives in pipeline/ and steps/.

- `ingest`: the Event Grid blob trigger on the upload container (Flex Consumption has no polling
  blob trigger); the SDK-type binding hands over a BlobClient so the image is not downloaded.
- `step_<name>` / `step_<name>_backfill`: queue-triggered functions per step and lane (fresh
  uploads / reprocessing), registered from the step registry.
- `health`: an anonymous HTTP probe for load balancers and operators.
- `api`: the HTTP API and the web page (pipeline.api.app, a FastAPI application) behind one
  catch-all route; host.json's empty `routePrefix` lets it serve `/` and `/api/...` alike.
  Anonymous at the Functions level: the API authenticates every caller itself.
- `sweep_stalled`: a timer that resumes images whose message was lost (pipeline.engine.recovery).

Indexing never fails on configuration: every function registers whatever the settings or the
installed models say, the problems go to the log here and to `GET /api/health` (503), and
images that reach a step that cannot run end `failed` with the reason (see
pipeline.framework.registry).
"""

import azure.functions as func
import azurefunctions.extensions.bindings.blob as blob

from pipeline.api import app as api
from pipeline.engine import ingest, recovery, runner
from pipeline.framework.registry import registered_step_specs, step_name
from pipeline.observability import health
from pipeline.settings import LANES, STORAGE_CONNECTION, queue_binding, route_setting

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


@app.function_name("ingest")
@app.blob_trigger(
    arg_name="upload",
    path="%DARKROOM_UPLOAD_CONTAINER%/{name}",
    connection=STORAGE_CONNECTION,
    source=func.BlobSource.EVENT_GRID,
)
def ingest_upload(upload: blob.BlobClient) -> None:
    ingest.start_image(upload)


@app.function_name("health")
@app.route(route="api/health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health_probe(req: func.HttpRequest) -> func.HttpResponse:
    healthy, report = health.check()
    return func.HttpResponse(
        health.as_json(report), status_code=200 if healthy else 503, mimetype="application/json"
    )


@app.function_name("api")
@app.route(route="{*path}", auth_level=func.AuthLevel.ANONYMOUS)
async def http_api(req: func.HttpRequest) -> func.HttpResponse:
    return await api.asgi.handle_async(req)


@app.function_name("sweep_stalled")
@app.timer_trigger(arg_name="timer", schedule="%DARKROOM_SWEEP_SCHEDULE%", run_on_startup=False)
def sweep_stalled(timer: func.TimerRequest) -> None:
    recovery.sweep()


def _register_step(spec: str, lane: str) -> None:
    name = step_name(spec)

    @app.function_name(f"step_{name}" if lane == "live" else f"step_{name}_{lane}")
    @app.queue_trigger(
        arg_name="msg", queue_name=queue_binding(name, lane), connection=STORAGE_CONNECTION
    )
    def run_step(msg: func.QueueMessage) -> None:
        runner.handle(spec, msg.get_body(), msg.dequeue_count or 1, lane)


for _spec in registered_step_specs(route_setting()):
    for _lane in LANES:
        _register_step(_spec, _lane)
health.log_startup_problems()
