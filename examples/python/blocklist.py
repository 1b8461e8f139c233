#!/usr/bin/env python3
"""Keeps a local block list exactly equal to the hub's active indicators.

The way README.md ("Keeping a block list exact") describes it:

1. Snapshot with the filter (kinds), and check its digest over what arrived.
2. Subscribe with the same filter, after_sequence = the snapshot's
   as_of_sequence, and a durable consumer name.
3. Apply each event: PUBLISHED or SIGHTING adds the indicator, REVOKED,
   EXPIRED or WITHDRAWN removes it, ACTION_TAKEN changes nothing.
4. Save the list, then Ack the sequence applied (a filtered consumer also acks
   a heartbeat's delivered_through). When the stream breaks (hub restart,
   network, no heartbeat for three intervals) reconnect and Subscribe with the
   consumer name alone: the hub resumes right after the last ack.

The list is kept in --state (JSON, replaced atomically); a later run with the
same file and consumer continues where the last one stopped, without a new
snapshot. On stdout, one JSON line per milestone:

    {"event": "snapshot", "as_of_sequence": 41, "count": 17, "digest": "..."}
    {"event": "synced", "applied_through": 57, "head": 57, "count": 18, "digest": "..."}

"synced" means caught up with the hub's durable head (a heartbeat said so);
"digest" is the README's digest of the local list, equal to the digest of a
Snapshot with the same filter as of that sequence. Diagnostics go to stderr.

Setup (see README.md, "A Python client"):

    pip install -r examples/python/requirements.txt
    python3 examples/python/blocklist.py --hub localhost:7443 \\
        --ca certs/dev/ca.pem --cert certs/dev/orgs/tsp-one.pem --key certs/dev/orgs/tsp-one.key \\
        --consumer block-list --kind PHONE_NUMBER --kind IMEI --state block-list.json

The gRPC stubs are generated from proto/dip/v1/hub.proto into --stubs (default
examples/python/stubs/) when they are not there yet.
"""

import argparse
import hashlib
import json
import os
import pathlib
import re
import sys
import threading
import time

HERE = pathlib.Path(__file__).resolve().parent


def log(message: str) -> None:
    print(f"blocklist: {message}", file=sys.stderr, flush=True)


def say(**fields) -> None:
    print(json.dumps(fields, sort_keys=True), flush=True)


def load_stubs(stubs_dir: pathlib.Path):
    """The generated modules, made from the proto first if they are missing."""
    if not (stubs_dir / "dip" / "v1" / "hub_pb2.py").exists():
        sys.path.insert(0, str(HERE))
        import generate_stubs

        log(f"generating the gRPC stubs into {stubs_dir}")
        generate_stubs.generate(stubs_dir)
    sys.path.insert(0, str(stubs_dir))
    from dip.v1 import hub_pb2, hub_pb2_grpc

    return hub_pb2, hub_pb2_grpc


# --- Every use of the proto's names is below. The proto prefixes each enum
# value with its enum's name (INDICATOR_KIND_PHONE_NUMBER, buf STANDARD); this
# program, like the hub's CLI and digest, speaks of short names (PHONE_NUMBER).


class Proto:
    def __init__(self, pb2, pb2_grpc):
        self.pb2 = pb2
        self.pb2_grpc = pb2_grpc
        event_type = pb2.EventType
        self.adds = {self.value(event_type, "PUBLISHED"), self.value(event_type, "SIGHTING")}
        self.removes = {
            self.value(event_type, "REVOKED"),
            self.value(event_type, "EXPIRED"),
            self.value(event_type, "WITHDRAWN"),
        }

    @staticmethod
    def _prefix(enum) -> str:
        """buf's prefix for an enum's values: IndicatorKind -> INDICATOR_KIND_."""
        return re.sub(r"(?<!^)(?=[A-Z])", "_", enum.DESCRIPTOR.name).upper() + "_"

    def value(self, enum, short: str) -> int:
        """An enum value by its short name (PHONE_NUMBER for INDICATOR_KIND_PHONE_NUMBER)."""
        name = self._prefix(enum) + short
        if name in enum.keys():
            return enum.Value(name)
        raise SystemExit(f"{short!r} is not a {enum.DESCRIPTOR.name}: one of {list(enum.keys())}")

    def short_name(self, enum, value: int) -> str:
        name = enum.Name(value)
        prefix = self._prefix(enum)
        return name[len(prefix):] if name.startswith(prefix) else name

    def kind(self, short: str) -> int:
        return self.value(self.pb2.IndicatorKind, short)

    def kind_name(self, kind: int) -> str:
        """The KIND of the README's digest formula (PHONE_NUMBER, IMEI, ...)."""
        return self.short_name(self.pb2.IndicatorKind, kind)

    def stub(self, channel):
        return self.pb2_grpc.IndicatorHubServiceStub(channel)

    def snapshot_request(self, kinds):
        return self.pb2.SnapshotRequest(filter=self.pb2.Filter(kinds=kinds))

    def subscribe_request(self, kinds, consumer, after_sequence, heartbeat_seconds):
        return self.pb2.SubscribeRequest(
            filter=self.pb2.Filter(kinds=kinds),
            after_sequence=after_sequence,
            consumer=consumer,
            heartbeat_seconds=heartbeat_seconds,
        )

    def ack_request(self, consumer, sequence):
        return self.pb2.AckRequest(consumer=consumer, sequence=sequence)


# --- The block list ----------------------------------------------------------


def indicator_hash(kind_name: str, value: str) -> int:
    """h(i) of the README's digest: SHA-256("KIND:value") as a big-endian integer."""
    return int.from_bytes(hashlib.sha256(f"{kind_name}:{value}".encode()).digest(), "big")


class BlockList:
    """A set of (KIND, value) with its digest, kept incrementally like the hub's."""

    def __init__(self, items=(), applied_through=0):
        self.items = set()
        self.sum = 0
        self.applied_through = applied_through
        for kind_name, value in items:
            self.add(kind_name, value)

    def add(self, kind_name, value):
        if (kind_name, value) not in self.items:
            self.items.add((kind_name, value))
            self.sum = (self.sum + indicator_hash(kind_name, value)) % 2**256

    def remove(self, kind_name, value):
        if (kind_name, value) in self.items:
            self.items.remove((kind_name, value))
            self.sum = (self.sum - indicator_hash(kind_name, value)) % 2**256

    @property
    def digest(self) -> str:
        return format(self.sum, "064x")

    def save(self, path: pathlib.Path, consumer: str, kinds) -> None:
        """Replaces the state file atomically (written, synced, renamed)."""
        state = {
            "consumer": consumer,
            "kinds": sorted(kinds),
            "applied_through": self.applied_through,
            "digest": self.digest,
            "indicators": sorted([k, v] for k, v in self.items),
        }
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @staticmethod
    def load(path: pathlib.Path, consumer: str, kinds):
        """The saved list, or None when there is none for this consumer and filter."""
        try:
            with open(path, encoding="utf-8") as f:
                state = json.load(f)
        except FileNotFoundError:
            return None
        if state["consumer"] != consumer or state["kinds"] != sorted(kinds):
            raise SystemExit(
                f"{path} belongs to consumer {state['consumer']!r} with kinds {state['kinds']}; "
                "use another --state file or the same --consumer and --kind")
        blocklist = BlockList(map(tuple, state["indicators"]), state["applied_through"])
        if blocklist.digest != state["digest"]:
            raise SystemExit(f"{path} is damaged: its digest does not match its indicators")
        return blocklist


# --- Talking to the hub --------------------------------------------------------


class Watchdog:
    """Cancels a stream that has been silent for `seconds` (the hub heartbeats)."""

    def __init__(self, seconds, stream):
        self.seconds = seconds
        self.stream = stream
        self.timer = None
        self.fired = False
        self.pet()

    def pet(self):
        self.stop()
        self.timer = threading.Timer(self.seconds, self._fire)
        self.timer.daemon = True
        self.timer.start()

    def _fire(self):
        self.fired = True
        self.stream.cancel()

    def stop(self):
        if self.timer is not None:
            self.timer.cancel()


class Syncer:
    def __init__(self, args, proto, grpc):
        self.args = args
        self.proto = proto
        self.grpc = grpc
        self.kinds = [proto.kind(k) for k in args.kind]
        self.kind_names = sorted(proto.kind_name(k) for k in self.kinds)
        self.state_path = pathlib.Path(args.state)
        self.blocklist = None

    def channel(self):
        def read(path):
            with open(path, "rb") as f:
                return f.read()

        credentials = self.grpc.ssl_channel_credentials(
            root_certificates=read(self.args.ca),
            private_key=read(self.args.key),
            certificate_chain=read(self.args.cert),
        )
        # Snapshot messages carry up to 1000 indicators: more than gRPC's 4 MiB default.
        options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
        return self.grpc.secure_channel(self.args.hub, credentials, options=options)

    def snapshot(self, stub) -> BlockList:
        """Step 1: a whole snapshot, checked against its count and digest."""
        blocklist, as_of, done = BlockList(), None, False
        for message in stub.Snapshot(self.proto.snapshot_request(self.kinds)):
            if as_of is None:
                as_of = message.as_of_sequence
            elif message.as_of_sequence != as_of:
                raise SystemExit(f"the snapshot mixes sequences {as_of} and {message.as_of_sequence}")
            for state in message.indicators:
                blocklist.add(self.proto.kind_name(state.indicator.kind), state.indicator.value)
            if message.last:
                if message.count != len(blocklist.items) or message.digest != blocklist.digest:
                    raise SystemExit(
                        f"the snapshot announced {message.count} indicators with digest {message.digest} "
                        f"but {len(blocklist.items)} arrived with digest {blocklist.digest}")
                done = True
        if not done:
            raise SystemExit("the snapshot ended without its last message")
        blocklist.applied_through = as_of or 0
        say(event="snapshot", as_of_sequence=blocklist.applied_through,
            count=len(blocklist.items), digest=blocklist.digest)
        return blocklist

    def apply(self, event) -> None:
        """Step 3; events at or below what is applied (redelivered after a lost ack) are skipped."""
        if event.sequence <= self.blocklist.applied_through:
            return
        key = (self.proto.kind_name(event.indicator.kind), event.indicator.value)
        if event.type in self.proto.adds:
            self.blocklist.add(*key)
        elif event.type in self.proto.removes:
            self.blocklist.remove(*key)
        self.blocklist.applied_through = event.sequence

    def commit(self, stub) -> None:
        """Step 4: the list is saved before the hub is told it was applied."""
        self.blocklist.save(self.state_path, self.args.consumer, self.kind_names)
        stub.Ack(self.proto.ack_request(self.args.consumer, self.blocklist.applied_through))

    def follow(self, stub, after_sequence) -> None:
        """Step 2 to 4 on one stream, until it breaks."""
        request = self.proto.subscribe_request(
            self.kinds, self.args.consumer, after_sequence, self.args.heartbeat_seconds)
        stream = stub.Subscribe(request)
        watchdog = Watchdog(3 * self.args.heartbeat_seconds, stream)
        try:
            for message in stream:
                watchdog.pet()
                before = self.blocklist.applied_through
                for event in message.events:
                    self.apply(event)
                if message.HasField("heartbeat"):
                    beat = message.heartbeat
                    self.blocklist.applied_through = max(before, self.blocklist.applied_through,
                                                         beat.delivered_through)
                if self.blocklist.applied_through > before:
                    self.commit(stub)
                if message.HasField("heartbeat") and beat.delivered_through == beat.head_sequence:
                    say(event="synced", applied_through=self.blocklist.applied_through,
                        head=beat.head_sequence, count=len(self.blocklist.items),
                        digest=self.blocklist.digest)
        finally:
            watchdog.stop()
        if watchdog.fired:
            log(f"no message for {3 * self.args.heartbeat_seconds} s; reconnecting")

    def run(self) -> None:
        self.blocklist = BlockList.load(self.state_path, self.args.consumer, self.kind_names)
        backoff = 0.1
        while True:
            try:
                with self.channel() as channel:
                    stub = self.proto.stub(channel)
                    if self.blocklist is None:
                        self.blocklist = self.snapshot(stub)
                        self.commit(stub)
                        after = self.blocklist.applied_through
                    else:
                        # A reconnect: the consumer's cursor says where to resume.
                        after = 0
                    backoff = 0.1
                    self.follow(stub, after)
                    log("the stream ended; reconnecting")
            except self.grpc.RpcError as error:
                code = error.code()
                if code not in retry_codes(self.grpc):
                    raise SystemExit(f"the hub refused: {code.name}: {error.details()}")
                log(f"stream broken ({code.name}: {error.details()}); reconnecting in {backoff:.1f} s")
            time.sleep(backoff)
            backoff = min(backoff * 2, 5.0)


def retry_codes(grpc):
    """Codes after which reconnecting may help."""
    c = grpc.StatusCode
    return {c.UNAVAILABLE, c.CANCELLED, c.DEADLINE_EXCEEDED, c.UNKNOWN, c.INTERNAL, c.ABORTED}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hub", default="localhost:7443", help="host:port of the hub")
    parser.add_argument("--ca", required=True, help="the hub CA certificate (PEM)")
    parser.add_argument("--cert", required=True, help="your organisation's client certificate (PEM)")
    parser.add_argument("--key", required=True, help="its private key (PEM)")
    parser.add_argument("--consumer", required=True, help="durable consumer name (1-64 of A-Z a-z 0-9 . _ -)")
    parser.add_argument("--kind", action="append", required=True,
                        help="an indicator kind to keep (repeatable), e.g. PHONE_NUMBER")
    parser.add_argument("--state", required=True, help="the local block list (JSON)")
    parser.add_argument("--heartbeat-seconds", type=int, default=15,
                        help="heartbeat interval asked of the hub; silence for 3 of them is a broken stream")
    parser.add_argument("--stubs", default=str(HERE / "stubs"), help="where the generated stubs live")
    args = parser.parse_args()
    import grpc

    pb2, pb2_grpc = load_stubs(pathlib.Path(args.stubs))
    Syncer(args, Proto(pb2, pb2_grpc), grpc).run()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
