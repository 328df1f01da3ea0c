"""Patient merge: several sources describe one cohort patient, each with the elements it has."""


def merge_patient(existing: dict, incoming: dict) -> dict:
    """Keep the elements of `existing` and take every element `incoming` gives.

    A source that has only the pseudonym (a lab export) leaves the
    gender and birth year sent by the hospital in place.
    """
    merged = {key: value for key, value in existing.items() if key not in ("meta", "text")}
    # deceased[x] is a choice: an incoming deceasedBoolean false (an HL7 v2 delete) replaces a held deceasedDateTime.
    if any(key.startswith("deceased") for key in incoming):
        merged = {key: value for key, value in merged.items() if not key.startswith("deceased")}
    for key, value in incoming.items():
        if key == "meta":
            continue
        merged[key] = value
    # The union of the mapping tags keeps the Patient unchanged when any source is sent again.
    tags = {(tag["system"], tag["code"]): tag for source in (existing, incoming) for tag in source.get("meta", {}).get("tag", [])}
    meta = {}
    profiles = incoming.get("meta", {}).get("profile") or existing.get("meta", {}).get("profile")
    if profiles:
        meta["profile"] = profiles
    if tags:
        meta["tag"] = [tags[key] for key in sorted(tags)]
    if meta:
        merged["meta"] = meta
    return merged
