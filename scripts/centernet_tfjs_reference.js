#!/usr/bin/env node
/*
 * Reference outputs of the CenterNet tfjs graph model (npm @vladmandic/human, models/centernet.*)
 * as TensorFlow.js itself computes them: what the ONNX conversion
 * (python -m local.export_detector) is checked against.
 *
 * Not part of set-up: TensorFlow.js is not a dependency of the project any more. To record the
 * reference again (after a new @vladmandic/human, say):
 *   npm install --no-save @tensorflow/tfjs-core@4.22.0 @tensorflow/tfjs-converter@4.22.0 \
 *       @tensorflow/tfjs-backend-wasm@4.22.0
 *   .venv/bin/python -m local.export_detector --record-reference
 * which feeds this script the check canvases and writes tests/fixtures/centernet-tfjs-reference.json.
 *
 * stdin: N canvases, each 512*512*3 bytes (RGB, row-major, uint8: the model's input after the
 * detector's resize and letterbox). stdout: one JSON line with {"tfjs": version, "backend": ...,
 * "detections": [N x 100 x 6]} (x1, y1, x2, y2 in canvas pixels, score, class), the graph's
 * `tower_0/detections` output.
 */
'use strict';

const fs = require('fs');
const path = require('path');

const SIDE = 512;
const nodeModules = path.resolve(__dirname, '..', 'node_modules');
const tf = require(path.join(nodeModules, '@tensorflow/tfjs-core'));
const tfconv = require(path.join(nodeModules, '@tensorflow/tfjs-converter'));
const wasm = require(path.join(nodeModules, '@tensorflow/tfjs-backend-wasm'));

function fileHandler(jsonPath) {
  return {
    load: async () => {
      const spec = JSON.parse(fs.readFileSync(jsonPath, 'utf8'));
      const shards = [];
      const weightSpecs = [];
      for (const group of spec.weightsManifest) {
        weightSpecs.push(...group.weights);
        for (const p of group.paths) shards.push(fs.readFileSync(path.join(path.dirname(jsonPath), p)));
      }
      const data = Buffer.concat(shards);
      return {
        modelTopology: spec.modelTopology,
        format: spec.format,
        weightSpecs,
        weightData: data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength),
      };
    },
  };
}

async function main() {
  console.warn = () => {}; // tfjs-core's advert for tfjs-node
  const wasmDir = path.join(path.dirname(require.resolve(path.join(nodeModules, '@tensorflow/tfjs-backend-wasm'))), path.sep);
  wasm.setWasmPaths(wasmDir);
  await tf.setBackend('wasm');
  await tf.ready();
  const model = await tfconv.loadGraphModel(fileHandler(path.join(nodeModules, '@vladmandic/human/models/centernet.json')));
  const input = fs.readFileSync(0);
  const size = SIDE * SIDE * 3;
  if (input.length === 0 || input.length % size !== 0) throw new Error(`stdin: ${input.length} bytes, not a multiple of ${size}`);
  const detections = [];
  for (let offset = 0; offset < input.length; offset += size) {
    const out = tf.tidy(() => {
      const pixels = tf.tensor4d(new Int32Array(input.subarray(offset, offset + size)), [1, SIDE, SIDE, 3], 'int32');
      return model.execute(tf.cast(pixels, 'float32'), 'tower_0/detections');
    });
    detections.push((await out.array())[0]);
    out.dispose();
  }
  process.stdout.write(`${JSON.stringify({ tfjs: tf.version_core, backend: tf.getBackend(), detections })}\n`);
}

main().catch((err) => {
  process.stderr.write(`${err.stack || err}\n`);
  process.exit(1);
});
