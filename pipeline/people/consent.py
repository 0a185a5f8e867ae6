"""Consent erasure: a person who withdraws is hidden everywhere, from now on.

Every face of the person is deleted from the store, their images' documents forget the faces
(no face id, person, landmarks) and every derivative showing them is made again with the faces
hidden or removed; what remains is one template (the mean of their embeddings) in the people
container, flagged withdrawn and never searched by `/faces/search`, used only so their face is
hidden in every new derivative whatever the anonymisation policy (pipeline.people.matching
decides that, "when in doubt, hide"). See docs/publishing.md.

This module sits above the engine (it sends images again through `operations.requeue`) and
below the API; matching, which the engine's step context uses, must not import it.
"""

from __future__ import annotations

import numpy as np

from pipeline.engine import operations
from pipeline.framework.contract import utc_now
from pipeline.framework.registry import step_name
from pipeline.people.hiding import conceal
from pipeline.people.matching import WITHDREW
from pipeline.stores.erase import erase_blob
from pipeline.stores.faces import FacesStore, owner_lock, partition
from pipeline.stores.results import ResultsStore


def withdraw(store: FacesStore, owner: str | None, person: str) -> dict[str, set[str]]:
    """Consent erasure: keep one template, delete every face; returns {image: its face ids}.
    NoSuchPerson if the person is gone (merged away meanwhile) or has withdrawn already."""
    with owner_lock(store.azure, owner):
        record = store.live_person(owner, person)
        rows = store.query(
            store.faces,
            "SELECT c.id, c.image, c.model, c.embedding FROM c "
            "WHERE c.owner = @owner AND c.person = @person",
            {"@owner": partition(owner), "@person": person},
            owner,
        )
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


def forget_faces(document: dict, face_ids: set[str]) -> int:
    """Strip an image document, in place, of what points at the erased faces; returns how
    many it held. Their recognition entries lose face id and person and become `hide`; their
    analysis entries keep only box and score (pipeline.people.hiding.conceal, as for a face hidden
    at
    recognition): the box is what lets every later render hide the face, and carries no
    identity."""
    hidden: set[int] = set()
    for face in (document.get("recognition") or {}).get("faces", []):
        if face.get("face_id") in face_ids:
            face.pop("person_name", None)
            face.update(face_id=None, person=None, usable=False, reason=WITHDREW, hide=True)
            hidden.add(face["face"])
    if hidden and document.get("analysis"):
        document["analysis"] = conceal(document["analysis"], hidden)
    return len(hidden)


def hide_in_derivatives(azure, results: ResultsStore, shown: dict[str, set[str]]) -> int:
    """After `withdraw`: every image that showed the person forgets their faces (forget_faces)
    and loses every derivative that shows them. The analysis image is deleted (no user sees
    it; a step that needs it again gets ArtifactMissing and prepare makes it again, from which
    recognize hides the face by the template). The published copy and the thumbnail are made
    again by transform with the faces hidden whatever the policy, and the archive by the steps
    after it; on a route without transform, the thumbnail and the archive are deleted instead.
    Returns how many images were sent again."""
    route = tuple(azure.settings.pipeline_steps)
    names = [step_name(s) for s in route]
    start = route[names.index("transform")] if "transform" in names else None
    remade = 0
    for image, face_ids in shown.items():
        document = results.get(image)
        if not document or not forget_faces(document, face_ids):
            continue
        derived = document.get("derived") or {}
        erase_blob(azure, derived.get("analysis"))
        if start is None:
            for ref in (derived.pop("thumbnail", None), document.pop("archive", None)):
                erase_blob(azure, ref)
            results.save(document)
            continue
        operations.requeue(
            azure, results, operations.message_from_document(document, route, start, "live")
        )
        remade += 1
    return remade
