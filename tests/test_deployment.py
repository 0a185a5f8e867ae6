"""What deploys: the package, indexing without Node or Tesseract, and a deployment that is
missing a model — every function still indexes, health says what to fix, images wait in poison.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

from local import package
from pipeline.framework.registry import builtin_step_specs
from pipeline.settings import LANES, PROJECT_ROOT
from tests.harness import Pipeline

MODELS = "pipeline/vision/local/models/"
TAGGER = MODELS + "efficientnet-lite0.onnx"

# The settings an Azure deployment has (infra/bicep sets them): identity-based connections only,
# and the platform's own markers. No connection string, no key.
AZURE_LIKE = {
    "WEBSITE_SITE_NAME": "darkroom-test",
    "WEBSITE_INSTANCE_ID": "0" * 64,
    "AzureWebJobsStorage__blobServiceUri": "https://darkroomtest.blob.core.windows.net",
    "AzureWebJobsStorage__queueServiceUri": "https://darkroomtest.queue.core.windows.net",
    "AzureWebJobsStorage__tableServiceUri": "https://darkroomtest.table.core.windows.net",
    "AzureWebJobsStorage__credential": "managedidentity",
    "AzureWebJobsStorage__clientId": "11111111-2222-3333-4444-555555555555",
    "DARKROOM_STORAGE__blobServiceUri": "https://darkroomtest.blob.core.windows.net",
    "DARKROOM_STORAGE__queueServiceUri": "https://darkroomtest.queue.core.windows.net",
    "DARKROOM_STORAGE__tableServiceUri": "https://darkroomtest.table.core.windows.net",
    "DARKROOM_STORAGE__credential": "managedidentity",
    "DARKROOM_STORAGE__clientId": "11111111-2222-3333-4444-555555555555",
    "DARKROOM_COSMOS__accountEndpoint": "https://darkroomtest.documents.azure.com:443/",
    "DARKROOM_COSMOS__credential": "managedidentity",
    "DARKROOM_COSMOS__clientId": "11111111-2222-3333-4444-555555555555",
    "PIPELINE_STEPS": "prepare,analyze,transform,store",
    "DARKROOM_QUEUE_PREFIX": "darkroom-",
    "DARKROOM_UPLOAD_CONTAINER": "uploads",
}

# Runs inside the unzipped package, as the Python worker would: import function_app, list what
# it registered, then say what health would say without any network call.
INDEX_SCRIPT = """
import json, sys
import function_app, pipeline
from pipeline.observability import health
functions = [f.get_function_name() for f in function_app.app.get_functions()]
print(json.dumps({
    "functions": functions,
    "pipeline_from": pipeline.__file__,
    "problems": health.startup_problems(),
}))
"""


@pytest.fixture(scope="module")
def built_zip(tmp_path_factory) -> Path:
    return package.build(tmp_path_factory.mktemp("dist"))


@pytest.fixture
def unzipped(built_zip: Path, tmp_path: Path) -> Path:
    with zipfile.ZipFile(built_zip) as archive:
        archive.extractall(tmp_path / "app")
    return tmp_path / "app"


def run_in(app_dir: Path, env: dict[str, str], script: str) -> subprocess.CompletedProcess:
    """`python -c script` in the app folder with ONLY `env` (plus HOME) and no tools on PATH:
    no node, no tesseract, as on Flex Consumption."""
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=app_dir,
        env={"HOME": str(app_dir), "PATH": "/nonexistent", **env},
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def expected_functions() -> set[str]:
    steps = builtin_step_specs()
    queue_functions = {
        f"step_{s}" if lane == "live" else f"step_{s}_{lane}" for s in steps for lane in LANES
    }
    return {"ingest", "health", "api", "sweep_stalled", *queue_functions}


def test_package_holds_the_app_and_its_models_and_nothing_of_the_laptop(built_zip):
    assert built_zip.name == f"darkroom-{package.version()}.zip"
    with zipfile.ZipFile(built_zip) as archive:
        names = archive.namelist()
    top = {name.split("/", 1)[0] for name in names}
    assert top == {"function_app.py", "host.json", "requirements.txt", "pipeline", "steps"}
    for needed in (
        "pipeline/settings.py",
        "steps/analyze.py",
        TAGGER,
        MODELS + "blazeface/face_detection_full_range.tflite",
        MODELS + "face-embedder/dlib-resnet-v1.onnx",
        MODELS + "face-embedder/dlib-resnet-v1.json",
    ):
        assert needed in names
    # every generated model file of the working tree travels with the package
    generated = {
        p.relative_to(PROJECT_ROOT).as_posix()
        for p in (PROJECT_ROOT / MODELS).rglob("*")
        if p.is_file() and not p.name.endswith(".tmp")
    }
    assert generated and generated <= set(names)
    for name in names:
        assert "node_modules" not in name and "__pycache__" not in name
        assert not name.startswith(("local/", "tests/", ".venv", ".darkroom", "bench/"))
        assert "local.settings" not in name
        assert not name.endswith(".pyc")
        # No JavaScript runs on Azure; the page's script is served to browsers, not run.
        assert not name.endswith(".js") or name.startswith("pipeline/api/page/")
    assert "pipeline/__main__.py" not in names  # the operator CLI's entry point stays home
    # reproducible: the same tree gives the same bytes
    again = package.build(built_zip.parent / "again")
    assert again.read_bytes() == built_zip.read_bytes()


def test_requirements_stay_free_of_build_time_and_laptop_packages():
    from packaging.requirements import Requirement

    lines = (PROJECT_ROOT / "requirements.txt").read_text().splitlines()
    names = {Requirement(line).name.lower() for line in lines if line.strip() and line[0] != "#"}
    laptop = {
        "torch",
        "onnx",
        "imagehash",
        "scipy",
        "pytest",
        "opencv-python",
        "rapidocr-onnxruntime",
    }
    assert names and not names & laptop


def test_unzipped_package_indexes_every_function_with_azure_settings_and_no_node(unzipped):
    result = run_in(unzipped, AZURE_LIKE, INDEX_SCRIPT)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(report["pipeline_from"]).is_relative_to(unzipped)  # the package, not the repo
    assert set(report["functions"]) == expected_functions()
    # the default configuration runs on Azure: every model from the package, no apt, no Node
    assert report["problems"] == []


def test_a_local_connection_string_on_azure_is_refused_but_the_app_still_indexes(unzipped):
    env = {**AZURE_LIKE, "DARKROOM_STORAGE": "UseDevelopmentStorage=true"}
    result = run_in(unzipped, env, INDEX_SCRIPT)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(report["functions"]) == expected_functions()
    (problem,) = [p for p in report["problems"] if "local emulator" in p]
    assert problem.startswith("DARKROOM_STORAGE ") and "managedidentity" in problem


def test_a_missing_model_indexes_everything_and_health_names_it_with_the_fix(
    unzipped, make_pipeline
):
    (unzipped / TAGGER).unlink()
    pipeline = make_pipeline("prepare,analyze,transform,store", host=False)
    script = INDEX_SCRIPT + (
        "healthy, report = health.check()\n"
        "print(json.dumps({'healthy': healthy, 'report': report}))\n"
    )
    result = run_in(unzipped, pipeline.env, script)
    assert result.returncode == 0, result.stderr[-3000:]
    *_, index_line, health_line = result.stdout.strip().splitlines()
    assert set(json.loads(index_line)["functions"]) == expected_functions()
    health = json.loads(health_line)
    assert health["healthy"] is False
    checks = health["report"]["checks"]
    tags = checks["analyzers"]["capabilities"]["tags"]
    assert tags["ok"] is False and "efficientnet-lite0.onnx" in tags["error"]
    assert "DARKROOM_TAGS_PROVIDER" in tags["fix"]
    others = {c: e["ok"] for c, e in checks["analyzers"]["capabilities"].items() if c != "tags"}
    assert others and all(others.values())  # only the missing one is named
    assert checks["blob"]["ok"] and checks["queue"]["ok"] and checks["cosmos"]["ok"]


def _health(pipeline: Pipeline) -> tuple[int, dict]:
    url = f"http://127.0.0.1:{pipeline.settings.host_port}/api/health"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_images_at_a_step_that_cannot_run_fail_at_once_and_replay_once_it_is_fixed(
    make_pipeline, fixture_bytes, tmp_path
):
    model = tmp_path / "model.bin"
    pipeline = make_pipeline("prepare,tests.pipeline_steps.needs_model,store", host=False)
    pipeline.env["MODEL_FILE"] = str(model)
    pipeline.start_host(healthy=False)

    status, report = _health(pipeline)
    assert status == 503 and "needs_model" in report["checks"]["route"]["error"]
    assert "MODEL_FILE" in report["checks"]["route"]["error"]

    image, etag = pipeline.upload("cat.jpg", fixture_bytes("cat.jpg"))
    doc = pipeline.wait_final(image, etag)
    assert doc["status"] == "failed" and "step needs_model cannot run" in doc["reason"]
    assert doc["steps"]["needs_model"]["attempts"] == 1  # configuration: no five retries
    poisoned = pipeline.queue_messages(pipeline.settings.poison_queue_name("needs_model"))
    assert len(poisoned) == 1

    model.write_text("v1")  # the operator installs the model; no restart needed
    assert _health(pipeline)[0] == 200
    assert "1 replayed" in pipeline.cli("poison", "replay", "--step", "needs_model").stderr
    doc = pipeline.wait_final(image, etag)
    assert doc["status"] == "done" and doc["needs_model"] == {"model": "v1"}


def test_settings_catalog_is_what_the_code_reads():
    from pipeline.settings import setting_catalog

    catalog = setting_catalog()
    assert {"PIPELINE_STEPS", "DARKROOM_QUEUE_PREFIX", "DARKROOM_UPLOAD_CONTAINER"} <= {
        name for name, spec in catalog.items() if spec.required
    }
    assert catalog["DARKROOM_STORAGE"].secret and catalog["DARKROOM_WEBHOOK_SECRET"].secret
    assert catalog["DARKROOM_HOST_PORT"].local_only
    sample = json.loads((PROJECT_ROOT / "local.settings.sample.json").read_text())["Values"]
    host_only = {
        "FUNCTIONS_WORKER_RUNTIME",
        "AzureWebJobsFeatureFlags",
        "PYTHON_ENABLE_INIT_INDEXING",
    }
    assert set(sample) - host_only <= set(catalog), "the sample names a setting nobody reads"


def _documented_settings(readme: str, catalog: set[str]) -> set[str]:
    """Names in the README's configuration table, with `X_A` / `_B` shorthands expanded."""
    import re

    names: set[str] = set()
    for line in readme.splitlines():
        if not line.startswith("| `"):
            continue
        tokens = re.findall(r"`([^`]+)`", line.split("|")[1])
        base = tokens[0] if tokens else ""
        names.add(base)
        for token in tokens[1:]:
            if token.startswith("__"):
                names.add(base.split("__")[0] + token)
                continue
            words = base.split("_")
            names.update("_".join(words[:-k]) + token for k in range(1, 4))
    expanded = set()
    for name in names:
        if "<CAPABILITY>" in name:
            pattern = re.compile(re.escape(name).replace("<CAPABILITY>", "[A-Z]+") + "$")
            expanded |= {c for c in catalog if pattern.match(c)}
        else:
            expanded.add(name)
    return expanded


def test_every_setting_is_in_the_readme_table_and_the_sample():
    from pipeline.settings import setting_catalog

    catalog = setting_catalog()
    readme = (PROJECT_ROOT / "README.md").read_text()
    undocumented = set(catalog) - _documented_settings(readme, set(catalog))
    assert not undocumented, f"README's configuration table lacks {sorted(undocumented)}"
    sample = json.loads((PROJECT_ROOT / "local.settings.sample.json").read_text())["Values"]
    # identity-based forms are Azure's; the sample uses the emulators' connection strings
    missing = {name for name in catalog if "__" not in name} - set(sample)
    assert not missing, f"local.settings.sample.json lacks {sorted(missing)}"


def test_bad_settings_get_one_clear_line_each_and_the_cli_no_traceback(tmp_path):
    import pytest

    from pipeline.settings import Settings, SettingsError

    bad = {
        "DARKROOM_MAX_BYTES": "-5",
        "DARKROOM_RETRY_BASE_SECONDS": "nan",
        "DARKROOM_PUBLISH_QUALITY": "high",
        "DARKROOM_ANONYMIZE_FACES": "smudge",
    }
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(bad)
    problems = caught.value.problems
    assert len(problems) == 4
    assert "DARKROOM_MAX_BYTES must be >= 1, not -5" in problems
    assert "DARKROOM_RETRY_BASE_SECONDS must be a finite number, not 'nan'" in problems
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "status"],
        cwd=PROJECT_ROOT,
        env={**os.environ, **bad},
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("setting: ") == 4


# ---------------------------------------------------------------- azd's prepackage hook
# What a deploy machine must never be asked for: root, apt, a browser, the test tools, set-up.
SETUP_ONLY = ("apt-get", "apt ", "sudo", "playwright", "chromium", "requirements-dev", "setup.sh")
SETUP_ONLY += ("make setup", "tesseract")


def _prepackage_hooks() -> dict[str, str]:
    import yaml

    config = yaml.safe_load((PROJECT_ROOT / "azure.yaml").read_text())
    hook = config["services"]["api"]["hooks"]["prepackage"]
    return {platform: hook[platform]["run"] for platform in ("posix", "windows")}


def _commands(script: Path) -> str:
    """A hook script without its comments."""
    return "\n".join(line for line in script.read_text().splitlines() if line.lstrip()[:1] != "#")


def _run_commands() -> str:
    """Every command local/model_files.py runs: the strings in its subprocess.run calls."""
    import ast

    tree = ast.parse((PROJECT_ROOT / "local" / "model_files.py").read_text())
    runs = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "subprocess.run"
    ]
    assert len(runs) == 2  # pip (the model tools), npm (the model packages)
    commands = [ast.unparse(run) for run in runs]
    assert "MODELS_REQUIREMENTS" in commands[0] and "'--omit=dev'" in commands[1]
    return "\n".join(commands)


def test_prepackage_hook_runs_the_lean_model_files_step_not_set_up():
    """`prepackage: make setup` ran apt, pip's dev set (torch, Playwright) and `npm ci` of the
    emulators: `azd up` stopped on macOS, Windows, non-root Linux and CI runners."""
    hooks = _prepackage_hooks()
    assert hooks == {"posix": "./scripts/model_files.sh", "windows": "./scripts/model_files.ps1"}
    for code in (*(_commands(PROJECT_ROOT / run) for run in hooks.values()), _run_commands()):
        for word in SETUP_ONLY:
            assert word not in code, word
        assert "npm ci" not in code or "--omit=dev" in code
    # what a missing model file may install: the model tools, never the test tools
    models = (PROJECT_ROOT / "requirements-models.txt").read_text()
    assert "-r requirements.txt" in models
    for test_tool in ("pytest", "playwright", "schemathesis", "ruff", "pyvips"):
        assert test_tool not in models
    assert "-r requirements-models.txt" in (PROJECT_ROOT / "requirements-dev.txt").read_text()
    npm = json.loads((PROJECT_ROOT / "package.json").read_text())
    assert set(npm["dependencies"]) == {"@mediapipe/face_detection", "@vladmandic/human"}
    assert {"azurite", "@vercel/cosmosdb-server"} <= set(npm["devDependencies"])


def _recording_tools(tmp_path: Path) -> tuple[Path, Path]:
    """A PATH folder whose apt-get, sudo, npm, make, … only record that they were called."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    for tool in ("apt-get", "apt", "sudo", "npm", "node", "make", "bash", "playwright"):
        (bin_dir / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> "{calls}"\nexit 1\n')
        (bin_dir / tool).chmod(0o755)
    return bin_dir, calls


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX hook")
def test_prepackage_hook_is_a_no_op_when_the_model_files_are_there(tmp_path):
    models = PROJECT_ROOT / MODELS
    before = {p: p.stat().st_mtime_ns for p in models.rglob("*") if p.is_file()}
    assert before, "run make setup first: the model files are not there"
    bin_dir, calls = _recording_tools(tmp_path)
    done = subprocess.run(
        ["sh", str(PROJECT_ROOT / _prepackage_hooks()["posix"])],
        cwd=tmp_path,  # azd runs it from the project folder; it must not depend on that
        env={
            "HOME": str(tmp_path),
            "PATH": f"{bin_dir}:/usr/bin:/bin",
            # any pip install would fail: the no-op path must not install anything
            "PIP_NO_INDEX": "1",
            "PIP_FIND_LINKS": str(tmp_path / "nothing"),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "all 5 model files present: nothing to do" in done.stderr
    assert not calls.exists(), calls.read_text()  # no apt, npm, make, bash, browser
    assert {p: p.stat().st_mtime_ns for p in models.rglob("*") if p.is_file()} == before


def _project_copy(tmp_path: Path, models: bool) -> Path:
    """The parts of the project the model step reads, in a folder of its own (the shared
    models folder is never touched); with a copy of the model files or without any."""
    root = tmp_path / "project"
    for name in ("pipeline", "local", "steps"):
        shutil.copytree(
            PROJECT_ROOT / name,
            root / name,
            ignore=shutil.ignore_patterns("__pycache__", *(() if models else ("models",))),
        )
    for name in (
        "requirements.txt",
        "requirements-models.txt",
        "package.json",
        "package-lock.json",
        "pyproject.toml",
    ):
        shutil.copy2(PROJECT_ROOT / name, root / name)
    shutil.copytree(PROJECT_ROOT / "tests" / "fixtures", root / "tests" / "fixtures")
    return root


def _model_step(root: Path, path: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "local.model_files"],
        cwd=root,
        env={"HOME": str(root), "PATH": path, "PIP_NO_INDEX": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_model_step_makes_only_the_missing_file(tmp_path):
    root = _project_copy(tmp_path, models=True)
    (root / "node_modules").symlink_to(PROJECT_ROOT / "node_modules")
    blazeface = sorted((root / MODELS / "blazeface").iterdir())
    for path in blazeface:
        path.unlink()
    others = {p: p.stat().st_mtime_ns for p in (root / MODELS).rglob("*") if p.is_file()}
    bin_dir, calls = _recording_tools(tmp_path)
    done = _model_step(root, f"{bin_dir}:/usr/bin:/bin")
    assert done.returncode == 0, done.stderr
    assert "missing or damaged: faces (BlazeFace)" in done.stderr
    assert all(path.is_file() for path in blazeface)  # copied from the npm package
    assert all(p.stat().st_mtime_ns == t for p, t in others.items())  # the rest untouched
    assert not calls.exists()  # node_modules had the package: npm was not needed
    again = _model_step(root, f"{bin_dir}:/usr/bin:/bin")
    assert again.returncode == 0 and "nothing to do" in again.stderr


def test_model_step_says_what_it_cannot_make_and_what_to_do(tmp_path):
    """A fresh clone on a machine without Node: the npm-sourced models cannot be made; one line
    says which, why and what to do, before anything is downloaded or converted."""
    root = _project_copy(tmp_path, models=False)
    done = _model_step(root, "/usr/bin/nonexistent")  # no npm on PATH
    assert done.returncode == 1
    assert "@mediapipe/face_detection, @vladmandic/human come from npm" in done.stderr
    assert "install Node.js 18+ (npm)" in done.stderr
    assert "copy pipeline/vision/local/models/ from a machine where `make setup` ran" in done.stderr
    assert not (root / MODELS).exists() or not any((root / MODELS).rglob("*.onnx"))


# ------------------------------------------------- the prebuilt package (remote build off)
@pytest.fixture(scope="module")
def prebuilt_app(tmp_path_factory) -> Path:
    """`make package-prebuilt`'s zip, unpacked (pip fetches the Linux wheels once; cached)."""
    built = package.build(tmp_path_factory.mktemp("dist"), prebuilt=package.DEFAULT_PYTHON)
    app = tmp_path_factory.mktemp("prebuilt") / "app"
    with zipfile.ZipFile(built) as archive:
        archive.extractall(app)
    return app


def test_prebuilt_package_runs_on_its_own_packages_and_indexes_every_function(prebuilt_app):
    """The documented alternative to remote build: the zip carries requirements.txt installed
    for Linux x86-64 / CPython 3.11 in .python_packages/lib/site-packages, the folder the worker
    adds to sys.path. With no site-packages of this machine at all (python -S), the app imports
    from there alone and indexes every function, as the worker would on Azure."""
    site = prebuilt_app / package.SITE_PACKAGES
    wheels = {p.name.split("-")[0].lower() for p in site.glob("*.dist-info")}
    from packaging.requirements import Requirement

    lines = (PROJECT_ROOT / "requirements.txt").read_text().splitlines()
    wanted = {
        Requirement(line).name.lower().replace("-", "_")
        for line in lines
        if line.strip() and line[0] != "#"
    }
    assert wanted <= {w.replace("-", "_") for w in wheels}
    # Azure's glibc is 2.31: no extension module may need a newer one
    tags = {
        line.split(": ", 1)[1]
        for wheel in site.glob("*.dist-info/WHEEL")
        for line in wheel.read_text().splitlines()
        if line.startswith("Tag: ")
    }
    assert all(t.endswith(("-any", "x86_64")) for t in tags), tags
    for tag in tags:
        for glibc in re.findall(r"manylinux_2_(\d+)", tag):
            assert int(glibc) <= 28, tag
    script = "import numpy, cv2, onnxruntime\nprint(numpy.__file__)\n" + INDEX_SCRIPT
    result = subprocess.run(
        [sys.executable, "-S", "-c", script],
        cwd=prebuilt_app,
        env={
            "HOME": str(prebuilt_app),
            "PATH": "/nonexistent",
            "PYTHONPATH": str(site),
            **AZURE_LIKE,
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    numpy_from, *_, index_line = result.stdout.strip().splitlines()
    assert Path(numpy_from).is_relative_to(site)
    report = json.loads(index_line)
    assert set(report["functions"]) == expected_functions()
    assert report["problems"] == []


def test_a_retiring_service_is_healthy_today_and_health_and_status_name_the_replacement(
    unzipped, make_pipeline
):
    pipeline = make_pipeline(
        "prepare,analyze,transform,store",
        host=False,
        DARKROOM_TAGS_PROVIDER="azure",
        DARKROOM_TEXT_PROVIDER="azure",
        DARKROOM_AZURE_VISION_ENDPOINT="https://vision.cognitiveservices.azure.com",
        DARKROOM_AZURE_VISION_KEY="not-used-by-this-test",
    )
    script = INDEX_SCRIPT + (
        "healthy, report = health.check()\n"
        "print(json.dumps({'healthy': healthy, 'report': report}))\n"
    )
    result = run_in(unzipped, pipeline.env, script)
    assert result.returncode == 0, result.stderr[-3000:]
    health = json.loads(result.stdout.strip().splitlines()[-1])
    assert health["healthy"] is True
    warnings = health["report"]["warnings"]
    assert len(warnings) == 2 and all("2028-09-25" in w for w in warnings)
    assert any("DARKROOM_TAGS_PROVIDER=openai" in w for w in warnings)
    assert any("DARKROOM_TEXT_PROVIDER=docintel" in w for w in warnings)
    tags = health["report"]["checks"]["analyzers"]["capabilities"]["tags"]
    assert tags["retires"] == "2028-09-25"
    assert "start-up: tags uses Azure AI Vision" in result.stderr

    status = pipeline.cli("status", "--json")
    assert status.returncode == 0, status.stderr[-2000:]
    assert json.loads(status.stdout)["warnings"] == warnings
    printed = pipeline.cli("status")
    assert "warning: text uses Azure AI Vision Image Analysis 4.0" in printed.stdout
