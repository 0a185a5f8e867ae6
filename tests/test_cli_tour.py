"""The operator CLI as a new user meets it (issue 9's new-user findings), on the real stack."""

from __future__ import annotations

import json

from pipeline.stores.storage import send_to_queue


def test_submit_takes_jfif_and_jpe_refuses_unsafe_names_and_download_keeps_folders(
    make_pipeline, fixture_bytes, tmp_path
):
    pipeline = make_pipeline("prepare,analyze,transform,store")
    photos = tmp_path / "photos"
    for folder in ("a", "b"):
        (photos / folder).mkdir(parents=True)
    (photos / "a" / "cat.jfif").write_bytes(fixture_bytes("cat.jpg"))
    (photos / "b" / "cat.jpe").write_bytes(fixture_bytes("cat.jpg"))
    (photos / "a" / "same.jpg").write_bytes(fixture_bytes("portrait.jpg"))
    (photos / "b" / "same.jpg").write_bytes(fixture_bytes("dog.jpg"))
    (photos / "b" / "ctrl\x01\x1b[31mred.jpg").write_bytes(fixture_bytes("dog.jpg"))
    out = tmp_path / "out"

    result = pipeline.cli("submit", str(photos), "--wait", "--download", str(out))

    assert result.returncode == 0, result.stderr[-2000:]
    assert "skipping" in result.stderr and "control characters" in result.stderr
    assert "\x1b" not in result.stderr + result.stdout  # names are escaped when printed
    assert "4 done" in result.stderr
    saved = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert saved == [
        "a/cat.published.jpg",
        "a/same.published.jpg",
        "b/cat.published.jpg",
        "b/same.published.jpg",
    ]
    assert "transform: published 512x512 jpeg, 1 face blurred" in result.stdout  # the portrait
    assert "no face hidden" in result.stdout  # the cat: not "faces off: 0"
    assert "analyze: no face · " in result.stdout  # each step's own summary line


def test_show_download_saves_every_blob_of_the_image(make_pipeline, fixture_bytes, tmp_path):
    pipeline = make_pipeline("prepare,analyze,transform,store")
    image, etag = pipeline.upload("portrait.jpg", fixture_bytes("portrait.jpg"))
    pipeline.wait_final(image, etag)
    result = pipeline.cli("show", "portrait.jpg", "--download", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)["id"] == image
    names = {p.name for p in (tmp_path / image).rglob("*") if p.is_file()}
    assert {"analysis.jpg", "thumbnail.jpg", "result.json", "published.jpg"} <= names


def test_poison_list_shows_more_than_32_and_leaves_them_in_place(make_pipeline):
    pipeline = make_pipeline(host=False)
    poison = pipeline.settings.poison_queue_name("prepare")
    for i in range(40):
        send_to_queue(pipeline.azure, poison, f"junk {i}".encode())
    listed = pipeline.cli("poison", "list", "--json")
    assert listed.returncode == 0, listed.stderr[-2000:]
    rows = [json.loads(line) for line in listed.stdout.splitlines() if line.strip()]
    assert len(rows) == 40
    again = pipeline.cli("poison", "list", "--json")  # still there, visible at once
    assert len([line for line in again.stdout.splitlines() if line.strip()]) == 40


def test_status_shows_the_results_queue_stalled_images_and_the_health_url(
    make_pipeline, fixture_bytes
):
    pipeline = make_pipeline()
    image, etag = pipeline.upload("cat.jpg", fixture_bytes("cat.jpg"))
    pipeline.wait_final(image, etag)
    result = pipeline.cli("status", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["queues"][pipeline.settings.results_queue_name()] == 1
    assert report["stalled"] == []
    assert report["health"].endswith(f":{pipeline.settings.host_port}/api/health")
