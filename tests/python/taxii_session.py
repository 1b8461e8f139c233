"""Two GETs of one URL on one kept-alive HTTPS connection, with a client
certificate: the first at once, the second after a line arrives on stdin (so
that the test can change the hub in between). Prints one JSON line
{"status", "body"} after each.

Run by tests/hub/taxii.rs; not a tool.

usage: taxii_session.py URL CA CERT KEY
"""

import json
import sys

import requests


def main():
    url, ca, cert, key = sys.argv[1:5]
    session = requests.Session()
    session.verify = ca
    session.cert = (cert, key)
    headers = {"Accept": "application/taxii+json;version=2.1"}
    for turn in range(2):
        if turn == 1:
            sys.stdin.readline()
        response = session.get(url, headers=headers, timeout=30)
        print(json.dumps({"status": response.status_code, "body": response.json()}))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
