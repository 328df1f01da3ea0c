"""Transaction bundles of PUTs with deterministic ids, so a re-sent input changes nothing."""

import json
import re

from ..mapping.functions import ExactDecimal

# json.dumps writes the NUL characters of a placeholder as \u0000.
_PLACEHOLDER = re.compile(r'"\\u0000([0-9]+)\\u0000"')


def transaction_bundle(resources: list[dict]) -> dict:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": r,
                "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"},
            }
            for r in resources
        ],
    }


def to_json(document, indent: int | None = None) -> str:
    """Serialise FHIR JSON, writing each ExactDecimal with the digits it was read with, not its float value."""
    texts: list[str] = []

    def swap(node):
        if isinstance(node, ExactDecimal):
            texts.append(node.text)
            return f"\x00{len(texts) - 1}\x00"
        if isinstance(node, dict):
            return {key: swap(value) for key, value in node.items()}
        if isinstance(node, list):
            return [swap(value) for value in node]
        return node

    text = json.dumps(swap(document), ensure_ascii=False, indent=indent)
    return _PLACEHOLDER.sub(lambda match: texts[int(match.group(1))], text) if texts else text
