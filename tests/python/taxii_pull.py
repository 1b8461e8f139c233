"""Pulls every collection of a DIP Hub TAXII 2.1 server with the OASIS
taxii2-client, parses every object with stix2 and validates it with
stix2-validator, and prints what it got as one JSON document on stdout.

Run by tests/hub/taxii.rs (which provisions the packages); not a tool.

usage: taxii_pull.py DISCOVERY_URL CA CERT KEY PER_REQUEST
"""

import json
import sys

import stix2
import stix2validator
from taxii2client.v21 import Server, as_pages


def pull(func, per_request, **filters):
    """Every object of a paged endpoint, and how many pages it took."""
    objects, pages = [], 0
    for envelope in as_pages(func, per_request=per_request, **filters):
        pages += 1
        objects.extend(envelope.get("objects", []))
        if pages > 10_000:
            raise RuntimeError("more than 10000 pages: paging does not end")
    return objects, pages


def check(obj, invalid):
    """Parse with stix2 and validate with stix2-validator; record problems."""
    try:
        stix2.parse(obj, allow_custom=True)
    except Exception as error:  # noqa: BLE001 - reported, then asserted on
        invalid.append({"id": obj.get("id"), "stix2": str(error)})
    results = stix2validator.validate_instance(
        obj, stix2validator.ValidationOptions(version="2.1")
    )
    if not results.is_valid:
        invalid.append(
            {"id": obj.get("id"), "validator": [str(e) for e in results.errors]}
        )


def main():
    url, ca, cert, key, per_request = sys.argv[1:6]
    per_request = int(per_request)
    server = Server(url, verify=ca, cert=(cert, key))
    root = server.default
    report = {"api_root": root.url, "versions": root.versions, "collections": {}}
    invalid = []
    for collection in root.collections:
        objects, pages = pull(collection.get_objects, per_request)
        manifest, _ = pull(collection.get_manifest, per_request)
        whole = collection.get_objects(limit=1000).get("objects", [])
        for obj in objects:
            check(obj, invalid)
        entry = {
            "id": collection.id,
            "objects": objects,
            "pages": pages,
            "manifest": manifest,
            "whole": [[o["id"], o.get("modified")] for o in whole],
        }
        if collection.alias == "indicators" and len(manifest) >= 2:
            # added_after: everything added after the middle object's date_added.
            after = manifest[len(manifest) // 2]["date_added"]
            later, _ = pull(collection.get_objects, per_request, added_after=after)
            entry["added_after"] = {
                "after": after,
                "got": [[o["id"], o.get("modified")] for o in later],
                "expected": [
                    [m["id"], m["version"]] for m in manifest if m["date_added"] > after
                ],
            }
        if collection.alias == "indicators":
            entry["object_versions"] = {}
            for obj in objects:
                if obj["type"] == "indicator":
                    versions = collection.object_versions(obj["id"])
                    latest = collection.get_object(obj["id"])["objects"]
                    entry["object_versions"][obj["id"]] = {
                        "versions": versions.get("versions", []),
                        "latest": latest,
                    }
        report["collections"][collection.alias] = entry
    report["invalid"] = invalid
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
