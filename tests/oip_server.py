"""A small Open Inference Protocol v2 server for tests and benchmarks (the real ones, MLServer and
the Azure ML server, are in tests/servers.py): in this process, on loopback, quick to start."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from pipeline.vision.local.onnx_session import cpu_session


class LoopbackOipServer:
    """Open Inference Protocol v2 on loopback over a real ONNX model (one input, one output):
    `GET /v2/models/<m>` and `POST /v2/models/<m>/infer`. It counts inferences on photos, can
    answer `status` instead (a refusal) and can wait `delay` seconds after running the model
    (a slow server)."""

    def __init__(self, model_path, port: int = 0, status: int = 200, delay: float = 0.0) -> None:
        session = cpu_session(model_path)
        (inp,) = session.get_inputs()
        (out,) = session.get_outputs()
        self.inferences = 0
        self.status = status
        self.delay = delay
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._send(
                    {
                        "name": "toy",
                        "versions": ["3"],
                        "platform": "onnxruntime_onnx",
                        "inputs": [{"name": inp.name, "datatype": "FP32", "shape": inp.shape}],
                        "outputs": [{"name": out.name, "datatype": "FP32", "shape": out.shape}],
                    }
                )

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if owner.status != 200:
                    data = json.dumps({"error": "input too large for this model"}).encode()
                    self.send_response(owner.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                (tensor,) = body["inputs"]
                x = np.asarray(tensor["data"], np.float32).reshape(tensor["shape"])
                (y,) = session.run(None, {inp.name: x})
                time.sleep(owner.delay)
                if np.ptp(x) > 0:  # a photo: the start-up dry runs send a grey image
                    owner.inferences += 1
                self._send(
                    {
                        "model_name": "toy",
                        "outputs": [
                            {
                                "name": out.name,
                                "shape": list(y.shape),
                                "datatype": "FP32",
                                "data": y.ravel().tolist(),
                            }
                        ],
                    }
                )

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
