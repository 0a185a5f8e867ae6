#!/usr/bin/env node
/*
 * Darkroom offline object detector: CenterNet (MobileNetV3, COCO's 80 classes) as shipped in the
 * npm package @vladmandic/human (models/centernet.json + .bin), run by TensorFlow.js on its
 * WebAssembly backend. Everything is read from node_modules; nothing is fetched.
 *
 * Protocol: JSON lines. stdin gets one request per line, stdout answers each in order:
 *   request  {"id": n, "width": W, "height": H, "rgb": "<base64 of W*H*3 bytes, row-major RGB>"}
 *            optional per request: "min_score", "max_objects"
 *   answer   {"id": n, "objects": [{"name": "dog", "score": 0.87, "box": [x, y, w, h]}, ...]}
 *            boxes in pixels of the request's image, best score first; or {"id": n, "error": "..."}
 * On start it prints {"ready": true, "model": "centernet", "version": "<human version>", ...}, or
 * {"ready": false, "error": "..."} and exits 2 when a package or the model is missing.
 * stdout carries the protocol only: every log line goes to stderr. EOF on stdin ends the process,
 * so it dies with its parent.
 *
 * Options: --min-score 0.3  --max-objects 20  --iou 0.5 (per-class non-maximum suppression)
 *          --threads 1  --node-modules <dir> (default: the project's, two levels up)
 * Boxes of different classes are never merged: when the model hesitates between labels for one
 * object (the white horse of person-dog-horse.jpg: cow, sheep and horse, all 0.3-0.4) every
 * label above --min-score is reported.
 *
 * Raw RGB in, not JPEG: the caller has already decoded the image (numpy), and Node has no JPEG
 * decoder without a native or slow pure-JS package.
 *
 * Pre-processing is the model author's (mobilenetv3_centernet, lib/core/api): RGB 0..255 float,
 * aspect kept, centred on a zero (black) 512x512 canvas. Human itself stretches the image to a
 * square instead; on real photos that costs 0.05-0.2 of score and turns a cat into a dog.
 */
'use strict';

const fs = require('fs');
const path = require('path');
const readline = require('readline');
const { createRequire } = require('module');

const INPUT = 512;
const OUTPUT_NODE = 'tower_0/detections'; // [1, 100, 6]: x1, y1, x2, y2, score, class (0-based)

// COCO's 80 detection classes in the model's (0-based) order, as in human's src/object/labels.ts.
const LABELS = [
  'person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train', 'truck', 'boat',
  'traffic light', 'fire hydrant', 'stop sign', 'parking meter', 'bench', 'bird', 'cat', 'dog',
  'horse', 'sheep', 'cow', 'elephant', 'bear', 'zebra', 'giraffe', 'backpack', 'umbrella',
  'handbag', 'tie', 'suitcase', 'frisbee', 'skis', 'snowboard', 'sports ball', 'kite',
  'baseball bat', 'baseball glove', 'skateboard', 'surfboard', 'tennis racket', 'bottle',
  'wine glass', 'cup', 'fork', 'knife', 'spoon', 'bowl', 'banana', 'apple', 'sandwich', 'orange',
  'broccoli', 'carrot', 'hot dog', 'pizza', 'donut', 'cake', 'chair', 'couch', 'potted plant',
  'bed', 'dining table', 'toilet', 'tv', 'laptop', 'mouse', 'remote', 'keyboard', 'cell phone',
  'microwave', 'oven', 'toaster', 'sink', 'refrigerator', 'book', 'clock', 'vase', 'scissors',
  'teddy bear', 'hair drier', 'toothbrush',
];

// ----------------------------------------------------------------------------- io helpers

const log = (...args) => process.stderr.write(`[objects] ${args.join(' ')}\n`);
// Libraries must not write to stdout: it is the protocol channel.
console.log = console.info = console.debug = (...args) => log(...args);

function send(message) {
  process.stdout.write(`${JSON.stringify(message)}\n`);
}

function fail(message) {
  log(message);
  process.stdout.write(`${JSON.stringify({ ready: false, error: message })}\n`, () => process.exit(2));
}

function parseArgs(argv) {
  const opts = {
    minScore: 0.3,
    maxObjects: 20,
    iou: 0.5,
    threads: 1,
    nodeModules: path.resolve(__dirname, '..', '..', 'node_modules'),
  };
  const numeric = { '--min-score': 'minScore', '--max-objects': 'maxObjects', '--iou': 'iou', '--threads': 'threads' };
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = argv[i].split(/=(.*)/s);
    const value = inline !== undefined ? inline : argv[++i];
    if (value === undefined) throw new Error(`${flag} needs a value`);
    if (flag === '--node-modules') opts.nodeModules = path.resolve(value);
    else if (numeric[flag]) {
      const n = Number(value);
      if (!Number.isFinite(n)) throw new Error(`${flag}: not a number: ${value}`);
      opts[numeric[flag]] = n;
    } else throw new Error(`unknown option ${flag}`);
  }
  if (!(opts.minScore >= 0 && opts.minScore <= 1)) throw new Error('--min-score must be in [0, 1]');
  if (!(Number.isInteger(opts.maxObjects) && opts.maxObjects >= 1)) throw new Error('--max-objects must be an integer >= 1');
  if (!(Number.isInteger(opts.threads) && opts.threads >= 1)) throw new Error('--threads must be an integer >= 1');
  return opts;
}

// ----------------------------------------------------------------------------- multi-threaded wasm

/*
 * tfjs-backend-wasm 4.x refuses its threaded-SIMD build under Node (tfjs issue 3830): it hands
 * Emscripten's pthread workers blob: URLs, which Node's worker_threads cannot load. This writes
 * those two scripts to a private temporary folder instead, and lets the XNNPACK thread pool
 * have `threads` threads (the backend caps it at half the logical cores). Opt-in (--threads 2):
 * it relies on the internals of @tensorflow/tfjs-backend-wasm 4.22.
 */
function enableWasmThreads(tf, threads) {
  const os = require('os');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'darkroom-tfwasm-'));
  const remove = () => fs.rmSync(dir, { recursive: true, force: true });
  process.on('exit', remove);
  const mainScript = path.join(dir, 'threaded-simd.js');
  // Names the rollup bundle gives to the modules the factory's source refers to.
  const prelude = "var require$$0 = require('fs'), require$$1 = require('path'), "
    + "require$$3 = require('perf_hooks'), require$$4 = require('os'), commonjsGlobal = globalThis;\n";
  const NativeBlob = global.Blob;
  global.Blob = class TextBlob extends NativeBlob {
    constructor(parts, options) {
      super(parts, options);
      this.darkroomText = parts.map(String).join('');
      if (this.darkroomText.startsWith('var WasmBackendModuleThreadedSimd')) {
        fs.writeFileSync(mainScript, prelude + this.darkroomText);
      }
    }
  };
  const nativeCreate = URL.createObjectURL;
  let n = 0;
  URL.createObjectURL = (blob) => {
    if (!blob || typeof blob.darkroomText !== 'string') return nativeCreate(blob);
    const file = path.join(dir, `worker-${n++}.js`);
    // In the worker, the main script arrives as a Blob too: point it at the file.
    fs.writeFileSync(file, `URL.createObjectURL = () => ${JSON.stringify(mainScript)}; URL.revokeObjectURL = () => {};\n${blob.darkroomText}`);
    return file;
  };
  const realCpus = os.cpus;
  os.cpus = () => { const cpus = realCpus(); while (cpus.length < 2 * threads) cpus.push(cpus[0]); return cpus; };
  tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', true);
  return {
    restoreCpus: () => { os.cpus = realCpus; },
    // The workers have read both scripts once the backend is up and has run a model.
    removeScripts: remove,
  };
}

// ----------------------------------------------------------------------------- model

function loadModules(nodeModules) {
  if (!fs.existsSync(nodeModules)) throw new Error(`node_modules not found at ${nodeModules}: run npm ci in the project root`);
  const req = createRequire(path.join(nodeModules, 'darkroom-objects.js'));
  const need = ['@tensorflow/tfjs-core', '@tensorflow/tfjs-converter', '@tensorflow/tfjs-backend-wasm'];
  const mods = {};
  for (const name of need) {
    try { mods[name] = req(name); } catch (err) {
      throw new Error(`npm package ${name} is not installed in ${nodeModules} (${err.code || err.message}): run npm ci in the project root`);
    }
  }
  const humanDir = path.join(nodeModules, '@vladmandic', 'human');
  const modelJson = path.join(humanDir, 'models', 'centernet.json');
  if (!fs.existsSync(path.join(humanDir, 'package.json'))) throw new Error(`npm package @vladmandic/human is not installed in ${nodeModules}: run npm ci in the project root`);
  if (!fs.existsSync(modelJson)) throw new Error(`${modelJson} is missing: @vladmandic/human no longer ships the CenterNet model`);
  const humanVersion = JSON.parse(fs.readFileSync(path.join(humanDir, 'package.json'), 'utf8')).version;
  const wasmDir = path.join(path.dirname(req.resolve('@tensorflow/tfjs-backend-wasm')), path.sep);
  return { tf: mods['@tensorflow/tfjs-core'], tfconv: mods['@tensorflow/tfjs-converter'], wasm: mods['@tensorflow/tfjs-backend-wasm'], modelJson, humanVersion, wasmDir };
}

/** A tfjs IOHandler that reads a graph model and its weight shards from disk. */
function fileHandler(jsonPath) {
  return {
    load: async () => {
      const spec = JSON.parse(fs.readFileSync(jsonPath, 'utf8'));
      const dir = path.dirname(jsonPath);
      const weightSpecs = [];
      const shards = [];
      for (const group of spec.weightsManifest) {
        weightSpecs.push(...group.weights);
        for (const p of group.paths) shards.push(fs.readFileSync(path.join(dir, p)));
      }
      const weights = Buffer.concat(shards);
      return {
        modelTopology: spec.modelTopology,
        format: spec.format,
        generatedBy: spec.generatedBy,
        convertedBy: spec.convertedBy,
        signature: spec.signature,
        userDefinedMetadata: spec.userDefinedMetadata,
        weightSpecs,
        weightData: weights.buffer.slice(weights.byteOffset, weights.byteOffset + weights.byteLength),
      };
    },
  };
}

async function setup(opts) {
  const started = Date.now();
  const m = loadModules(opts.nodeModules);
  const { tf } = m;
  // tfjs-core advertises tfjs-node on start; that package cannot be installed offline.
  const warn = console.warn;
  console.warn = (...args) => { if (!String(args[0]).includes('tfjs-node')) log(...args); };
  m.wasm.setWasmPaths(m.wasmDir);
  let threading = { restoreCpus: () => {}, removeScripts: () => {} };
  if (opts.threads > 1) {
    threading = enableWasmThreads(tf, opts.threads);
    m.wasm.setThreadsCount(opts.threads);
  }
  try {
    if (!(await tf.setBackend('wasm'))) throw new Error('the tfjs wasm backend failed to initialise (see the log above)');
    await tf.ready();
  } finally {
    threading.restoreCpus();
    console.warn = warn;
  }
  const model = await m.tfconv.loadGraphModel(fileHandler(m.modelJson));
  const warm = tf.tidy(() => model.execute(tf.zeros([1, INPUT, INPUT, 3]), OUTPUT_NODE));
  await warm.data();
  warm.dispose();
  threading.removeScripts();
  const info = {
    backend: tf.getBackend(),
    simd: await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT'),
    threads: m.wasm.getThreadsCount(),
    tfjs: tf.version_core,
    load_ms: Date.now() - started,
  };
  log(`centernet from @vladmandic/human ${m.humanVersion}: ${JSON.stringify(info)}`);
  return { tf, model, version: m.humanVersion, info };
}

// ----------------------------------------------------------------------------- inference

function iou(a, b) {
  const w = Math.min(a[2], b[2]) - Math.max(a[0], b[0]);
  const h = Math.min(a[3], b[3]) - Math.max(a[1], b[1]);
  if (w <= 0 || h <= 0) return 0;
  const inter = w * h;
  return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter);
}

function decodeRequest(req) {
  const { width, height, rgb } = req;
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new Error('width and height must be positive integers');
  }
  if (typeof rgb !== 'string') throw new Error('rgb must be a base64 string');
  const bytes = Buffer.from(rgb, 'base64');
  if (bytes.length !== width * height * 3) {
    throw new Error(`rgb has ${bytes.length} bytes, expected width*height*3 = ${width * height * 3}`);
  }
  return { width, height, bytes };
}

async function detect(state, opts, req) {
  const { tf, model } = state;
  const { width, height, bytes } = decodeRequest(req);
  const minScore = req.min_score ?? opts.minScore;
  const maxObjects = req.max_objects ?? opts.maxObjects;
  const scale = INPUT / Math.max(width, height);
  const w = Math.max(1, Math.round(width * scale));
  const h = Math.max(1, Math.round(height * scale));
  const dx = (INPUT - w) >> 1;
  const dy = (INPUT - h) >> 1;
  const out = tf.tidy(() => {
    const pixels = tf.tensor3d(new Int32Array(bytes), [height, width, 3], 'int32');
    const image = tf.expandDims(tf.cast(pixels, 'float32'), 0);
    const resized = w === width && h === height ? image : tf.image.resizeBilinear(image, [h, w]);
    const canvas = tf.pad(resized, [[0, 0], [dy, INPUT - h - dy], [dx, INPUT - w - dx], [0, 0]]);
    return model.execute(canvas, OUTPUT_NODE);
  });
  const rows = (await out.array())[0];
  out.dispose();
  // Candidates in image pixels, best first. The model already keeps only heatmap peaks (top 100).
  const candidates = rows
    .filter((r) => r[4] >= minScore && Number.isInteger(r[5]) && LABELS[r[5]])
    .map((r) => ({
      cls: r[5],
      score: r[4],
      xyxy: [
        Math.min(Math.max((r[0] - dx) / scale, 0), width),
        Math.min(Math.max((r[1] - dy) / scale, 0), height),
        Math.min(Math.max((r[2] - dx) / scale, 0), width),
        Math.min(Math.max((r[3] - dy) / scale, 0), height),
      ],
    }))
    .filter((c) => c.xyxy[2] - c.xyxy[0] >= 1 && c.xyxy[3] - c.xyxy[1] >= 1)
    .sort((a, b) => b.score - a.score);
  const kept = [];
  for (const c of candidates) {
    if (kept.length >= maxObjects) break;
    if (!kept.some((k) => k.cls === c.cls && iou(k.xyxy, c.xyxy) > opts.iou)) kept.push(c);
  }
  const round = (v) => Math.round(v * 10) / 10;
  return kept.map((k) => ({
    name: LABELS[k.cls],
    score: Math.round(Math.min(Math.max(k.score, 0), 1) * 10000) / 10000,
    box: [round(k.xyxy[0]), round(k.xyxy[1]), round(k.xyxy[2] - k.xyxy[0]), round(k.xyxy[3] - k.xyxy[1])],
  }));
}

// ----------------------------------------------------------------------------- main loop

async function main() {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (err) {
    fail(`bad arguments: ${err.message}`);
    return;
  }
  let state;
  try {
    state = await setup(opts);
  } catch (err) {
    fail(err.message || String(err));
    return;
  }
  send({ ready: true, model: 'centernet', version: state.version, ...state.info });

  // Requests are answered one at a time, in order: tfjs runs one inference at a time anyway.
  const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  let chain = Promise.resolve();
  lines.on('line', (line) => {
    if (!line.trim()) return;
    chain = chain.then(async () => {
      let id = null;
      try {
        const req = JSON.parse(line);
        id = req.id ?? null;
        const started = process.hrtime.bigint();
        const objects = await detect(state, opts, req);
        const ms = Number(process.hrtime.bigint() - started) / 1e6;
        send({ id, objects, ms: Math.round(ms * 10) / 10 });
      } catch (err) {
        send({ id, error: err.message || String(err) });
      }
    });
  });
  lines.on('close', () => { chain.then(() => process.exit(0)); });
}

process.on('unhandledRejection', (err) => { log('unhandled:', err && err.stack ? err.stack : err); process.exit(1); });
main();
