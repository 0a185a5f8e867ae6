"""Where faces and people are kept, and how close two faces must be to be one person."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.setting_reader import SettingReader


@dataclass(frozen=True)
class PeopleSettings:
    """Face matching: where faces and people live, and when two faces are one person."""

    faces_container: str = "faces"
    people_container: str = "people"
    match_distance: float = 0.6  # dlib ResNet's documented euclidean threshold (measured: 11)
    min_faces: int = 3  # similar unassigned faces needed before they become a new person
    similar_hamming: int = 10  # perceptual-hash bits apart for /api/images/{id}/similar

    @classmethod
    def read(cls, r: SettingReader) -> PeopleSettings:
        return cls(
            faces_container=r.text("DARKROOM_FACES_CONTAINER", cls.faces_container),
            people_container=r.text("DARKROOM_PEOPLE_CONTAINER", cls.people_container),
            match_distance=r.number(
                "DARKROOM_FACE_MATCH_DISTANCE", cls.match_distance, float, 0.05, 2.0
            ),
            min_faces=r.number("DARKROOM_PERSON_MIN_FACES", cls.min_faces, minimum=1, maximum=50),
            similar_hamming=r.number(
                "DARKROOM_SIMILAR_HAMMING", cls.similar_hamming, minimum=0, maximum=64
            ),
        )
