"""One raw HTTPS GET to a DIP Hub TAXII server with a client certificate, to
check what taxii2-client never shows: status codes, headers and error bodies.
Prints {"status", "headers", "body"} as JSON on stdout.

Run by tests/hub/taxii.rs; not a tool.

usage: taxii_http.py URL CA CERT KEY ACCEPT
"""

import json
import sys

import requests


def main():
    url, ca, cert, key, accept = sys.argv[1:6]
    response = requests.get(
        url, verify=ca, cert=(cert, key), headers={"Accept": accept}, timeout=30
    )
    try:
        body = response.json()
    except ValueError:
        body = response.text
    json.dump(
        {
            "status": response.status_code,
            "headers": {k.lower(): v for k, v in response.headers.items()},
            "body": body,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
