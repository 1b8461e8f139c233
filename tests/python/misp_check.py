#!/usr/bin/env python3
"""Loads a MISP feed directory with PyMISP and reports what it holds.

    python3 tests/python/misp_check.py FEED_DIR

Every event named by manifest.json is loaded with MISPEvent.load_file, must
export again in the feed format (MISPEvent.to_feed: every field MISP's feed
reader needs is there), and its manifest entry must equal the one PyMISP
computes from the event; hashes.csv must hold exactly PyMISP's md5 hashes of
the attributes that are not deleted. Prints one JSON object on stdout:
{"events": [...uuids], "attributes": [{event, type, category, value, to_ids,
deleted, tags}]}. Any mismatch: a message on stderr and exit status 1.
"""

import json
import pathlib
import sys

from pymisp import MISPEvent


def scalar(value):
    """MISP writes numbers as strings or numbers; compare them as text."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, dict):
        return {k: scalar(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scalar(v) for v in value]
    return value


def fail(message):
    print(f"misp_check: {message}", file=sys.stderr)
    sys.exit(1)


def main(feed: pathlib.Path) -> None:
    manifest = json.loads((feed / "manifest.json").read_text())
    hashes = set((feed / "hashes.csv").read_text().splitlines())
    expected_hashes = set()
    attributes = []
    for uuid, entry in manifest.items():
        event = MISPEvent()
        event.load_file(str(feed / f"{uuid}.json"))
        if event.uuid != uuid:
            fail(f"{uuid}.json holds event {event.uuid}")
        computed = scalar(event.manifest[uuid])
        if computed != scalar(entry):
            fail(f"manifest entry of {uuid}: {entry} but PyMISP computes {computed}")
        event.to_feed()
        for attribute in event.attributes:
            deleted = bool(getattr(attribute, "deleted", False))
            if not deleted:
                expected_hashes.update(f"{h},{uuid}" for h in attribute.hash_values("md5"))
            attributes.append({
                "event": uuid,
                "uuid": attribute.uuid,
                "type": attribute.type,
                "category": attribute.category,
                "value": attribute.value,
                "to_ids": attribute.to_ids,
                "deleted": deleted,
                "tags": sorted(tag.name for tag in attribute.tags),
                "event_tags": sorted(tag.name for tag in event.tags),
            })
    if hashes != expected_hashes:
        fail(f"hashes.csv differs from PyMISP's: extra {sorted(hashes - expected_hashes)[:5]}, "
             f"missing {sorted(expected_hashes - hashes)[:5]}")
    print(json.dumps({"events": sorted(manifest), "attributes": attributes}))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(pathlib.Path(sys.argv[1]))
