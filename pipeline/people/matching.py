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
every face of the person is deleted from the store, their images' documents forget the faces
(no face id, person, landmarks) and every derivative showing them is made again with the faces
hidden or removed; what remains is one template (the mean of their embeddings) in the people
container, flagged withdrawn and never searched by `/faces/search`, used only so their face is
hidden in every new derivative, whatever the anonymisation policy. Without it, "blur me from
now on" could not be kept.

When in doubt, hide: once anyone in an owner's photos has withdrawn, a face of that owner's
new photos is hidden unless it can be told apart from every withdrawn template with
confidence — a face the quality gate refuses (cut by the edge, blurred, turned: no embedding
to compare), a face within `match_distance + CONSENT_DOUBT` of a template, or a face of a model
version no template exists for. See docs/publishing.md.

Atomicity: every change to an owner's faces and people (recording an image's faces, matching,
merge, rename, take-out, recluster, erasure) runs under the owner's lease (`owner_lock`), and
each write of a face or person is conditional on what was read (Cosmos `_etag`, If-Match). So
two merges in opposite directions run one after the other — the second finds its person gone
(NoSuchPerson) — and a face never points at a person that does not exist; a face found
pointing at one anyway (left by an older version) counts as unassigned and `recluster`
frees it.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from dataclasses import dataclass

from pipeline.framework.contract import utc_now
from pipeline.framework.step_api import FaceEntry, FaceVerdict
from pipeline.people.settings import PeopleSettings
from pipeline.stores.faces import FacesStore, owner_lock, partition

log = logging.getLogger("darkroom.people")
NEIGHBOURS = 16
# How far beyond `match_distance` a face is still too close to a withdrawn person's template to
# call. Measured (tests/artifacts/face-distances.md, docs/analyzers.md): different people are
# 0.709 apart at the closest, the same person up to 0.457 on good faces and 0.57-0.70 on faces
# the gate just lets through; 0.6 + 0.1 hides those and still none of the other people.
CONSENT_DOUBT = 0.1
WITHDREW = "withdrew consent"


@dataclass
class PeopleBook:
    """The faces store seen from one image of one owner: what the recognize step records into."""

    store: FacesStore
    settings: PeopleSettings
    owner: str | None
    image: str

    def record(self, model: str, faces: list[FaceEntry]) -> list[FaceVerdict]:
        if not faces:
            return []
        with owner_lock(self.store.azure, self.owner):
            return self._record(model, faces)

    def _record(self, model: str, faces: list[FaceEntry]) -> list[FaceVerdict]:
        existing = self.store.get_faces(self.owner, [f.face_id for f in faces], etag=True)
        withdrawn = self.store.has_withdrawn(self.owner)
        alive: dict[str, bool] = {}
        verdicts: list[FaceVerdict] = []
        waiting: list[tuple[int, dict]] = []
        for entry in faces:
            before = existing.get(entry.face_id) or {}
            embedding = list(entry.embedding) if entry.embedding and entry.usable else None
            if withdrawn and self._in_doubt(model, embedding):
                # Hidden, and nothing of it is kept: no embedding, no record (one an earlier
                # delivery wrote goes), no face id in the document.
                self.store.delete_faces(self.owner, [entry.face_id])
                verdicts.append(FaceVerdict(person=None, hide=True))
                continue
            person = before.get("person")
            if person and not alive.setdefault(person, self.store.exists(self.owner, person)):
                person = None  # its person is gone: a face never points at no one's record
            document = {
                "id": entry.face_id,
                "owner": partition(self.owner),
                "image": self.image,
                "face": entry.face,
                "box": list(entry.box),
                "model": model,
                "usable": entry.usable,
                "reason": entry.reason,
                "embedding": embedding,
                "person": person,
                "not_people": before.get("not_people", []),
                "created_at": before.get("created_at") or utc_now(),
                "updated_at": utc_now(),
            }
            self.store.write_face(document, before.get("_etag"))
            verdicts.append(FaceVerdict(person=person, hide=False))
            if document["usable"] and person is None:
                waiting.append((len(verdicts) - 1, document))
        for i, document in waiting:
            verdicts[i] = FaceVerdict(person=match(self.store, self.settings, document), hide=False)
        return verdicts

    def _in_doubt(self, model: str, embedding: list[float] | None) -> bool:
        """Whether a face may be someone who withdrew consent (the owner has withdrawals)."""
        if embedding is None:
            return True  # unusable: nothing to tell who it is by
        nearest = self.store.nearest_withdrawn(self.owner, model, embedding)
        if nearest is None:
            return True  # withdrawals only under another model version: cannot compare
        return nearest["distance"] <= self.settings.match_distance + CONSENT_DOUBT


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
    alive: dict[str, bool] = {}

    def joinable(person: str | None) -> bool:
        if not person or person in refused:
            return False
        return alive.setdefault(person, store.exists(owner, person))

    for n in near:
        if joinable(n.get("person")):
            store.set_person(owner, [face["id"]], n["person"], only_from=None)
            return n["person"]
    unassigned = [n for n in near if not n.get("person")]
    images = {n["image"] for n in unassigned}
    if len(images) + 1 < settings.min_faces:
        return None
    person = new_person(store, owner, face["model"])
    one_per_image: dict[str, str] = {}
    for n in unassigned:  # nearest first: the closest face of each image
        one_per_image.setdefault(n["image"], n["id"])
    store.set_person(owner, [face["id"], *one_per_image.values()], person, only_from=None)
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
    """Run matching again over the owner's usable unassigned faces; returns how many joined.
    Faces pointing at a person that no longer exists (left by an older version) are freed
    first, so they can join someone real."""
    joined = 0
    with owner_lock(store.azure, owner):
        pointed = store.query(
            store.faces,
            "SELECT c.id, c.person FROM c WHERE c.owner = @owner AND IS_STRING(c.person)",
            {"@owner": partition(owner)},
            owner,
        )
        for person in {r["person"] for r in pointed}:
            if not store.exists(owner, person):
                ghosts = [r["id"] for r in pointed if r["person"] == person]
                store.set_person(owner, ghosts, None, only_from=person)
                log.warning("%d face(s) pointed at missing person %s: freed", len(ghosts), person)
        rows = store.query(
            store.faces,
            "SELECT * FROM c WHERE c.owner = @owner AND c.usable = true "
            "AND NOT IS_STRING(c.person)",
            {"@owner": partition(owner)},
            owner,
        )
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


def rename(store: FacesStore, owner: str | None, person: str, name: str | None) -> dict:
    """Name a person (NoSuchPerson if it is gone, merged away or withdrawn meanwhile)."""
    with owner_lock(store.azure, owner):
        record = store.live_person(owner, person, etag=True)
        return store.change_person({**record, "name": name, "updated_at": utc_now()})


def merge(store: FacesStore, owner: str | None, keep: str, other: str) -> int:
    """Move `other`'s faces to `keep` and delete `other`; returns how many faces moved.

    NoSuchPerson if either is gone (a merge in the opposite direction ran first)."""
    with owner_lock(store.azure, owner):
        kept = store.live_person(owner, keep, etag=True)
        store.live_person(owner, other)
        # Conditional on `keep` as read: if another instance deleted it after a read this
        # session has not seen yet, this fails (NoSuchPerson) before any face moves to it.
        store.change_person({**kept, "updated_at": utc_now()})
        moved = 0
        for sweep in range(2):
            if sweep:  # a face that joined `other` while it was being deleted follows too
                store.delete_person(owner, other)
            faces = [f["id"] for f in store.faces_of(owner, person=other)]
            moved += store.set_person(owner, faces, keep, only_from=other)
    return moved


def take_out(store: FacesStore, owner: str | None, person: str, face: str) -> bool:
    with owner_lock(store.azure, owner):
        row = store.get_faces(owner, [face], etag=True).get(face)
        if not row or row.get("person") != person:
            return False
        refused = sorted({*(row.get("not_people") or []), person})
        etag = row.pop("_etag", None)
        store.write_face(
            {**row, "person": None, "not_people": refused, "updated_at": utc_now()}, etag
        )
    return True
