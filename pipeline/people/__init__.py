"""People: faces matched into people per owner, corrections (rename, merge, take out) and consent
(withdrawal hides a person everywhere)."""
