"""People: faces grouped by who they are, and the corrections users make to that grouping.

Matching (when the recognize step records a face):
- a usable face joins the person of its nearest already-assigned face when that face is within
  `DARKROOM_FACE_MATCH_DISTANCE` (and the user has not taken this face out of that person);
- otherwise, once `DARKROOM_PERSON_MIN_FACES` similar unassigned faces (this one included, from
  different images) agree, they become a new unnamed person — one stray detection does not
  make a person (Immich's rule);
- only faces of the same model version are ever compared.
`recluster` runs the same rule over an owner's unassigned faces (on demand).

Corrections: rename, merge (the other's faces move, its record goes), take a face out (it
remembers it is not that person, so matching never puts it back), and consent erasure:
every face of the person is deleted from the store and their images' derivatives are made
again with their faces anonymised; what remains is one template (the mean of their
embeddings) in the people container, flagged withdrawn and never searched by `/faces/search`,
used only so their face is hidden in every new derivative, whatever the anonymisation policy.
Without it, "blur me from now on" could not be kept.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from dataclasses import dataclass

import numpy as np

from pipeline import operations
from pipeline.contract import utc_now
from pipeline.faces import FacesStore, owner_lock, partition
from pipeline.registry import step_name
from pipeline.results import ResultsStore
from pipeline.settings import PeopleSettings
from pipeline.step_api import FaceEntry, FaceVerdict

log = logging.getLogger("darkroom.people")
NEIGHBOURS = 16


@dataclass
class PeopleBook:
    """The faces store seen from one image of one owner: what the recognize step records into."""

    store: FacesStore
    settings: PeopleSettings
    owner: str | None
    image: str

    def record(self, model: str, faces: list[FaceEntry]) -> list[FaceVerdict]:
        existing = self.store.get_faces(self.owner, [f.face_id for f in faces])
        documents: list[dict] = []
        verdicts: list[FaceVerdict] = []
        for entry in faces:
            before = existing.get(entry.face_id) or {}
            embedding = list(entry.embedding) if entry.embedding and entry.usable else None
            hide = embedding is not None and self._withdrawn(model, embedding)
            document = {
                "id": entry.face_id,
                "owner": partition(self.owner),
                "image": self.image,
                "face": entry.face,
                "box": list(entry.box),
                "model": model,
                "usable": entry.usable and not hide,
                "reason": "withdrew consent" if hide else entry.reason,
                # A withdrawn person's embedding is not stored again, not even for this face.
                "embedding": None if hide else embedding,
                "person": None if hide else before.get("person"),
                "not_people": before.get("not_people", []),
                "created_at": before.get("created_at") or utc_now(),
                "updated_at": utc_now(),
            }
            self.store.upsert_face(document)
            documents.append(document)
            verdicts.append(FaceVerdict(person=document["person"], hide=hide))
        waiting = [i for i, d in enumerate(documents) if d["usable"] and d["person"] is None]
        if waiting:
            with owner_lock(self.store.azure, self.owner):
                for i in waiting:
                    # Another image's match may have taken this face in meanwhile.
                    current = self.store.get_faces(self.owner, [documents[i]["id"]])
                    face = current.get(documents[i]["id"], documents[i])
                    person = face.get("person") or match(self.store, self.settings, face)
                    verdicts[i] = FaceVerdict(person=person, hide=False)
        return verdicts

    def _withdrawn(self, model: str, embedding: list[float]) -> bool:
        nearest = self.store.nearest_withdrawn(self.owner, model, embedding)
        return nearest is not None and nearest["distance"] <= self.settings.match_distance


def match(store: FacesStore, settings: PeopleSettings, face: dict) -> str | None:
    """Give `face` (a stored, usable, unassigned face) a person by the rule above, or None."""
    owner = None if face["owner"] == partition(None) else face["owner"]
    near = [
        n
        for n in store.nearest(owner, face["model"], face["embedding"], NEIGHBOURS)
        if n["id"] != face["id"]
        and n["image"] != face["image"]  # one photo cannot show the same person twice
        and n["distance"] <= settings.match_distance
    ]
    refused = set(face.get("not_people") or [])
    assigned = [n for n in near if n.get("person") and n["person"] not in refused]
    if assigned:
        person = assigned[0]["person"]
        store.set_person(owner, [face["id"]], person)
        return person
    unassigned = [n for n in near if not n.get("person")]
    images = {n["image"] for n in unassigned}
    if len(images) + 1 < settings.min_faces:
        return None
    person = new_person(store, owner, face["model"])
    one_per_image: dict[str, str] = {}
    for n in unassigned:  # nearest first: the closest face of each image
        one_per_image.setdefault(n["image"], n["id"])
    store.set_person(owner, [face["id"], *one_per_image.values()], person)
    log.info("new person %s from %d faces", person, len(one_per_image) + 1)
    return person


def new_person(store: FacesStore, owner: str | None, model: str) -> str:
    person = uuid.uuid4().hex
    now = utc_now()
    store.save_person(
        {
            "id": person,
            "owner": partition(owner),
            "model": model,
            "name": None,
            "created_at": now,
            "updated_at": now,
        }
    )
    return person


def recluster(store: FacesStore, settings: PeopleSettings, owner: str | None) -> int:
    """Run matching again over the owner's usable unassigned faces; returns how many joined."""
    joined = 0
    rows = store.query(
        store.faces,
        "SELECT * FROM c WHERE c.owner = @owner AND c.usable = true AND NOT IS_STRING(c.person)",
        {"@owner": partition(owner)},
        owner,
    )
    with owner_lock(store.azure, owner):
        for face in rows:
            current = store.get_faces(owner, [face["id"]]).get(face["id"])
            if current and not current.get("person") and match(store, settings, current):
                joined += 1
    return joined


def people_with_counts(store: FacesStore, owner: str | None) -> list[dict]:
    rows = store.query(
        store.faces,
        "SELECT c.person, c.image, c.id FROM c WHERE c.owner = @owner AND IS_STRING(c.person)",
        {"@owner": partition(owner)},
        owner,
    )
    faces = Counter(r["person"] for r in rows)
    images: dict[str, set[str]] = {}
    covers: dict[str, str] = {}
    for r in rows:
        images.setdefault(r["person"], set()).add(r["image"])
        covers.setdefault(r["person"], r["id"])
    return [
        {
            **p,
            "faces": faces.get(p["id"], 0),
            "images": len(images.get(p["id"], ())),
            "cover": covers.get(p["id"]),
        }
        for p in store.people_of(owner)
        # A person whose faces all went elsewhere (two images matched at the same moment and
        # the later match took the faces) is not listed.
        if faces.get(p["id"])
    ]


def merge(store: FacesStore, owner: str | None, keep: str, other: str) -> int:
    moved = [f["id"] for f in store.faces_of(owner, person=other)]
    store.set_person(owner, moved, keep)
    store.delete_person(owner, other)
    return len(moved)


def take_out(store: FacesStore, owner: str | None, person: str, face: str) -> bool:
    row = store.get_faces(owner, [face]).get(face)
    if not row or row.get("person") != person:
        return False
    refused = sorted({*(row.get("not_people") or []), person})
    store.upsert_face({**row, "person": None, "not_people": refused, "updated_at": utc_now()})
    return True


def withdraw(store: FacesStore, owner: str | None, person: str) -> dict[str, set[str]]:
    """Consent erasure: keep one template, delete every face; returns {image: its face ids}."""
    rows = store.query(
        store.faces,
        "SELECT c.id, c.image, c.model, c.embedding FROM c "
        "WHERE c.owner = @owner AND c.person = @person",
        {"@owner": partition(owner), "@person": person},
        owner,
    )
    record = store.get_person(owner, person) or {}
    vectors = [r["embedding"] for r in rows if r.get("embedding")]
    model = record.get("model") or (rows[0]["model"] if rows else None)
    if vectors and model:
        template = np.mean(np.asarray(vectors, dtype=np.float32), axis=0)
        store.save_person(
            {
                "id": person,
                "owner": partition(owner),
                "model": model,
                "template": [round(float(v), 6) for v in template],
                "withdrawn_at": utc_now(),
            }
        )
    else:
        store.delete_person(owner, person)
    store.delete_faces(owner, [r["id"] for r in rows])
    shown: dict[str, set[str]] = {}
    for r in rows:
        shown.setdefault(r["image"], set()).add(r["id"])
    return shown


def hide_in_derivatives(azure, results: ResultsStore, shown: dict[str, set[str]]) -> int:
    """After `withdraw`: mark the person's faces `hide` in each image's document and publish
    the image again from transform, which then anonymises them whatever the policy says.
    Returns how many images were sent again (none on a route without transform)."""
    route = tuple(azure.settings.pipeline_steps)
    names = [step_name(s) for s in route]
    if "transform" not in names:
        return 0
    start = route[names.index("transform")]
    remade = 0
    for image, face_ids in shown.items():
        document = results.get(image)
        recognition = (document or {}).get("recognition")
        if not recognition:
            continue
        for face in recognition.get("faces", []):
            if face.get("face_id") in face_ids:
                face.update(person=None, usable=False, reason="withdrew consent", hide=True)
        operations.requeue(
            azure, results, operations.message_from_document(document, route, start, "live")
        )
        remade += 1
    return remade
