"""MQTT 3.1.1 and 5.0 behaviours checked with Eclipse paho-mqtt 2.x, the client most device and
app developers use. Each check connects its own clients (one lanyard access token serves as the
password of every client id) under its own topics, and prints PASS or FAIL with what it saw.

    mqtt_conformance.py --host 127.0.0.1 --port PORT --token TOKEN [--only NAME ...]

Exit codes: 0 every check passed, 1 a check failed, 2 usage error.
"""

import argparse
import sys
import threading
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

WAIT = 5.0
QUIET = 0.6


class Client:
    """A paho client on its own network thread, whose events are recorded."""

    def __init__(self, args, client_id=None, v5=True, manual_ack=False, clean=True):
        """`clean` is 3.1.1's Clean Session; 5.0 says Clean Start at `connect`."""
        self.client_id = client_id or "paho-" + uuid.uuid4().hex[:12]
        self.v5 = v5
        self.c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else clean,
        )
        self.c.username_pw_set("device", args.token)
        self.c.max_inflight_messages_set(100)
        if manual_ack:
            self.c.manual_ack_set(True)
        self.args = args
        self.cond = threading.Condition()
        self.messages = []
        self.subacks = []
        self.connacks = []
        self.disconnects = []
        self.c.on_message = self._message
        self.c.on_subscribe = self._subscribe
        self.c.on_connect = self._connect
        self.c.on_disconnect = self._disconnect

    def _message(self, _c, _u, msg):
        with self.cond:
            self.messages.append(msg)
            self.cond.notify_all()

    def _subscribe(self, _c, _u, mid, codes, _props):
        with self.cond:
            self.subacks.append((mid, [c.value for c in codes]))
            self.cond.notify_all()

    def _connect(self, _c, _u, flags, reason, props):
        with self.cond:
            self.connacks.append((flags.session_present, reason.value, props))
            self.cond.notify_all()

    def _disconnect(self, _c, _u, _flags, reason, _props):
        with self.cond:
            self.disconnects.append(reason.value)
            self.cond.notify_all()

    def connect(self, clean_start=True, properties=None, will=None):
        if will is not None:
            topic, payload, qos, retain, will_props = will
            self.c.will_set(topic, payload, qos, retain, properties=will_props)
        kwargs = {}
        if self.v5:
            kwargs["clean_start"] = clean_start
            kwargs["properties"] = properties
        self.c.connect(self.args.host, self.args.port, keepalive=30, **kwargs)
        self.c.loop_start()
        self.wait(lambda: self.connacks, "CONNACK")
        session_present, reason, props = self.connacks[-1]
        if reason != 0:
            raise Failure(f"CONNECT refused with {reason:#x}")
        return session_present

    def wait(self, what, name, timeout=WAIT):
        with self.cond:
            if not self.cond.wait_for(what, timeout):
                raise Failure(f"{self.client_id}: no {name} within {timeout} s")

    def subscribe(self, topic, qos=0, **options):
        if self.v5:
            opts = SubscribeOptions(qos=qos, **options)
            _, mid = self.c.subscribe(topic, options=opts)
        else:
            _, mid = self.c.subscribe(topic, qos)
        self.wait(lambda: any(m == mid for m, _ in self.subacks), "SUBACK")
        return next(codes for m, codes in self.subacks if m == mid)

    def publish(self, topic, payload, qos=0, retain=False, properties=None):
        info = self.c.publish(topic, payload, qos, retain, properties=properties)
        if qos > 0:
            info.wait_for_publish(WAIT)
        return info

    def received(self, count, timeout=WAIT):
        self.wait(lambda: len(self.messages) >= count, f"{count} messages", timeout)
        return self.messages

    def quiet(self, seconds=QUIET):
        time.sleep(seconds)
        return self.messages

    def drop(self):
        """Ends the connection without DISCONNECT, as a lost network would."""
        self.c.loop_stop()
        sock = self.c.socket()
        if sock is not None:
            sock.close()

    def disconnect(self, properties=None):
        self.c.disconnect(properties=properties)
        self.c.loop_stop()


class Failure(Exception):
    pass


def expect(condition, what):
    if not condition:
        raise Failure(what)


def topic(name):
    return f"conformance/{name}/{uuid.uuid4().hex[:8]}"


CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


@check
def qos_is_the_minimum_of_published_and_granted(args):
    """[MQTT-3.8.4-6]: a message arrives at min(published QoS, granted QoS), retained too."""
    for v5 in (True, False):
        t = topic("qos")
        sub = Client(args, v5=v5)
        sub.connect()
        pub = Client(args, v5=v5)
        pub.connect()
        pub.publish(t + "/retained", b"r0", qos=0, retain=True)
        time.sleep(0.2)
        sub.subscribe(t + "/#", qos=2)
        sub.received(1)
        pub.publish(t + "/live", b"q0", qos=0)
        pub.publish(t + "/live", b"q1", qos=1)
        sub.received(3)
        seen = {m.payload: m.qos for m in sub.messages}
        expect(seen == {b"r0": 0, b"q0": 0, b"q1": 1}, f"v5={v5}: delivered QoS {seen}")
        sub2 = Client(args, v5=v5)
        sub2.connect()
        sub2.subscribe(t + "/live", qos=1)
        pub.publish(t + "/live", b"q2", qos=2)
        sub2.received(1)
        expect(sub2.messages[0].qos == 1, f"v5={v5}: QoS 2 to a QoS 1 subscription arrived at {sub2.messages[0].qos}")
        pub.publish(t + "/retained", b"", qos=0, retain=True)
        for c in (sub, sub2, pub):
            c.disconnect()


@check
def client_receive_maximum_is_respected(args):
    """[MQTT-3.3.4-9]: no more unacknowledged QoS 1 and 2 messages than the client's Receive Maximum."""
    t = topic("receive-maximum")
    props = Properties(PacketTypes.CONNECT)
    props.ReceiveMaximum = 2
    sub = Client(args, manual_ack=True)
    sub.connect(properties=props)
    sub.subscribe(t, qos=2)
    pub = Client(args)
    pub.connect()
    for i in range(5):
        pub.publish(t, f"m{i}".encode(), qos=2 if i % 2 else 1)
    sub.received(2)
    held = sub.quiet()
    expect(len(held) == 2, f"{len(held)} unacknowledged messages with Receive Maximum 2")
    acked = set()
    deadline = time.monotonic() + WAIT
    while len(acked) < 5 and time.monotonic() < deadline:
        for m in list(sub.messages):
            if m.mid not in acked:
                acked.add(m.mid)
                sub.c.ack(m.mid, m.qos)
        time.sleep(0.1)
    sub.received(5)
    expect([m.payload for m in sub.messages] == [f"m{i}".encode() for i in range(5)], "order kept")
    pub.disconnect()
    sub.disconnect()


@check
def server_receive_maximum_is_advertised(args):
    """5.0 §3.2.2.3.3: the CONNACK says how many QoS 1 and 2 publishes lanyard takes at once."""
    c = Client(args)
    c.connect()
    props = c.connacks[-1][2]
    expect(getattr(props, "ReceiveMaximum", None) is not None, "no Receive Maximum in the CONNACK")
    c.disconnect()


@check
def session_expiry_decides_persistence(args):
    """5.0 §3.1.2.4 and §3.1.2.11.2: Clean Start starts fresh now; the expiry keeps the session."""
    t = topic("session-expiry")
    cid = "paho-" + uuid.uuid4().hex[:12]
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 99999
    sub = Client(args, client_id=cid)
    expect(sub.connect(clean_start=True, properties=props) is False, "session present on Clean Start 1")
    sub.subscribe(t, qos=1)
    sub.disconnect()
    pub = Client(args)
    pub.connect()
    pub.publish(t, b"while away", qos=1)
    sub = Client(args, client_id=cid)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 99999
    expect(sub.connect(clean_start=False, properties=props) is True, "no session present after Clean Start 1 with an expiry")
    sub.received(1)
    expect(sub.messages[0].payload == b"while away", "queued message")
    # Expiry 0 on the way out: the session ends with the connection.
    out = Properties(PacketTypes.DISCONNECT)
    out.SessionExpiryInterval = 0
    sub.disconnect(properties=out)
    sub = Client(args, client_id=cid)
    expect(sub.connect(clean_start=False) is False, "session present after expiry 0 at DISCONNECT")
    sub.disconnect()
    # A short expiry, resumed within it.
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 4
    sub = Client(args, client_id=cid)
    sub.connect(clean_start=True, properties=props)
    sub.subscribe(t, qos=1)
    sub.disconnect()
    time.sleep(2)
    sub = Client(args, client_id=cid)
    expect(sub.connect(clean_start=False, properties=props) is True, "session gone within its expiry")
    sub.disconnect()
    pub.disconnect()


@check
def delayed_will_of_a_clean_session(args):
    """5.0 §3.1.3.2.2: the will is published after its delay, or when the session ends."""
    t = topic("will-delay")
    watcher = Client(args)
    watcher.connect()
    watcher.subscribe(t, qos=1)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 5
    will_props = Properties(PacketTypes.WILLMESSAGE)
    will_props.WillDelayInterval = 2
    dying = Client(args)
    dying.connect(clean_start=True, properties=props, will=(t, b"gone", 1, False, will_props))
    started = time.monotonic()
    dying.drop()
    expect(watcher.quiet(1.0) == [], "will published before its delay")
    watcher.received(1, timeout=6)
    waited = time.monotonic() - started
    expect(1.5 <= waited <= 6, f"will after {waited:.1f} s (delay 2 s)")
    watcher.disconnect()


@check
def will_keeps_its_qos_and_properties(args):
    """5.0 §3.1.3.2: the will's properties travel with it, and it keeps its own QoS."""
    t = topic("will-properties")
    watcher = Client(args)
    watcher.connect()
    watcher.subscribe(t, qos=2)
    will_props = Properties(PacketTypes.WILLMESSAGE)
    will_props.UserProperty = [("device", "boiler-7")]
    will_props.ContentType = "text/plain"
    will_props.ResponseTopic = t + "/reply"
    will_props.CorrelationData = b"42"
    will_props.PayloadFormatIndicator = 1
    dying = Client(args)
    dying.connect(will=(t, b"gone", 0, False, will_props))
    dying.drop()
    msg = watcher.received(1)[0]
    props = msg.properties
    expect(msg.qos == 0, f"a QoS 0 will arrived at QoS {msg.qos}")
    expect(("device", "boiler-7") in getattr(props, "UserProperty", []), "will user property lost")
    expect(getattr(props, "ContentType", None) == "text/plain", "will content type lost")
    expect(getattr(props, "ResponseTopic", None) == t + "/reply", "will response topic lost")
    expect(getattr(props, "CorrelationData", None) == b"42", "will correlation data lost")
    expect(getattr(props, "PayloadFormatIndicator", None) == 1, "will payload format lost")
    watcher.disconnect()


@check
def no_local(args):
    """[MQTT-3.8.3-3]: with No Local, a client does not receive its own publishes."""
    t = topic("no-local")
    me = Client(args)
    me.connect()
    me.subscribe(t, qos=1, noLocal=True)
    other = Client(args)
    other.connect()
    other.subscribe(t, qos=1)
    me.publish(t, b"mine", qos=1)
    other.received(1)
    expect(me.quiet() == [], "received its own publish with No Local")
    other.publish(t, b"theirs", qos=1)
    me.received(1)
    expect([m.payload for m in me.messages] == [b"theirs"], "another's publish with No Local")
    me.disconnect()
    other.disconnect()


@check
def retain_as_published(args):
    """5.0 §3.8.3.1: Retain As Published keeps RETAIN on forwarded messages; without it, 0."""
    t = topic("rap")
    keep = Client(args)
    keep.connect()
    keep.subscribe(t, qos=1, retainAsPublished=True)
    clear = Client(args)
    clear.connect()
    clear.subscribe(t, qos=1)
    pub = Client(args)
    pub.connect()
    pub.publish(t, b"kept", qos=1, retain=True)
    expect(keep.received(1)[0].retain, "RETAIN cleared with Retain As Published")
    expect(not clear.received(1)[0].retain, "RETAIN kept without Retain As Published")
    pub.publish(t, b"", qos=0, retain=True)
    for c in (keep, clear, pub):
        c.disconnect()


@check
def retain_handling(args):
    """5.0 §3.8.3.1: 0 sends retained messages on every subscribe, 1 on a new one, 2 never."""
    t = topic("retain-handling")
    pub = Client(args)
    pub.connect()
    pub.publish(t, b"state", qos=1, retain=True)
    c = Client(args)
    c.connect()
    c.subscribe(t, qos=1, retainHandling=0)
    c.received(1)
    c.subscribe(t, qos=1, retainHandling=0)
    c.received(2)
    c.subscribe(t, qos=1, retainHandling=1)
    expect(len(c.quiet()) == 2, "Retain Handling 1 resent on an existing subscription")
    never = Client(args)
    never.connect()
    never.subscribe(t, qos=1, retainHandling=2)
    expect(never.quiet() == [], "Retain Handling 2 sent the retained message")
    once = Client(args)
    once.connect()
    once.subscribe(t, qos=1, retainHandling=1)
    once.received(1)
    pub.publish(t, b"", qos=0, retain=True)
    for x in (pub, c, never, once):
        x.disconnect()


@check
def redelivery_sets_dup(args):
    """[MQTT-3.3.1-1]: a PUBLISH sent again on a resumed session has DUP 1 (3.1.1 and 5.0)."""
    for v5 in (True, False):
        t = topic("dup")
        cid = "paho-" + uuid.uuid4().hex[:12]
        props = None
        if v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 300
        sub = Client(args, client_id=cid, v5=v5, manual_ack=True, clean=False)
        sub.connect(clean_start=False, properties=props)
        sub.subscribe(t, qos=1)
        pub = Client(args, v5=v5)
        pub.connect()
        pub.publish(t, b"once", qos=1)
        first = sub.received(1)[0]
        expect(not first.dup, f"v5={v5}: first delivery has DUP 1")
        sub.drop()
        again = Client(args, client_id=cid, v5=v5, clean=False)
        expect(again.connect(clean_start=False, properties=props), f"v5={v5}: session not resumed")
        msg = again.received(1)[0]
        expect(msg.payload == b"once" and msg.dup, f"v5={v5}: redelivered with DUP {msg.dup}")
        if v5:
            out = Properties(PacketTypes.DISCONNECT)
            out.SessionExpiryInterval = 0
            again.disconnect(properties=out)
        else:
            again.disconnect()
        pub.disconnect()


@check
def suback_then_every_message(args):
    """Once the SUBACK is sent, every message published after it reaches the subscriber."""
    pub = Client(args)
    pub.connect()
    lost = 0
    rounds = 30
    for i in range(rounds):
        t = topic("suback")
        sub = Client(args)
        sub.connect()
        sub.subscribe(t, qos=1)
        pub.publish(t, f"request {i}".encode(), qos=1)
        try:
            sub.received(1, timeout=2)
        except Failure:
            lost += 1
        sub.disconnect()
    pub.disconnect()
    expect(lost == 0, f"{lost} of {rounds} requests published after the SUBACK were lost")


@check
def request_response(args):
    """5.0 §4.10: a request with Response Topic and Correlation Data, answered by a responder
    that subscribed just before; the requester (No Local) does not get its own request."""
    for i in range(10):
        t = topic("request")
        requester = Client(args)
        requester.connect()
        requester.subscribe(t, qos=2, noLocal=True)
        responder = Client(args)
        responder.connect()
        responder.subscribe(t, qos=2)
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = t + "/response"
        props.CorrelationData = b"334"
        requester.subscribe(t + "/response", qos=2)
        requester.publish(t, b"request", qos=1, properties=props)
        request = responder.received(1)[0]
        expect(request.payload == b"request", f"round {i}: request {request.payload!r}")
        rprops = request.properties
        expect(getattr(rprops, "ResponseTopic", None) == t + "/response", f"round {i}: response topic lost")
        answer = Properties(PacketTypes.PUBLISH)
        answer.CorrelationData = rprops.CorrelationData
        responder.publish(rprops.ResponseTopic, b"response", qos=1, properties=answer)
        response = requester.received(1)[0]
        expect(response.payload == b"response", f"round {i}: got {response.payload!r} (its own request?)")
        expect(getattr(response.properties, "CorrelationData", None) == b"334", f"round {i}: correlation data lost")
        expect(len(requester.quiet(0.2)) == 1, f"round {i}: the requester got its own request")
        requester.disconnect()
        responder.disconnect()


@check
def qos0_under_load_is_delivered(args):
    """A fast QoS 0 publisher is slowed down, not dropped from, while its subscribers read."""
    t = topic("load")
    count = 5000
    subs = []
    for _ in range(4):
        s = Client(args)
        s.connect()
        s.subscribe(t, qos=0)
        subs.append(s)
    pub = Client(args)
    pub.connect()
    payload = b"x" * 100
    for _ in range(count):
        while pub.c.publish(t, payload, 0).rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            time.sleep(0.001)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(len(s.messages) < count for s in subs):
        time.sleep(0.2)
    got = [len(s.messages) for s in subs]
    pub.disconnect()
    for s in subs:
        s.disconnect()
    expect(all(g == count for g in got), f"delivered {got} of {count}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--only", action="append", default=[])
    args = parser.parse_args()
    names = {fn.__name__ for fn in CHECKS}
    unknown = [n for n in args.only if n not in names]
    if unknown:
        parser.error(f"unknown checks {unknown}; known: {sorted(names)}")
    failed = 0
    for fn in CHECKS:
        if args.only and fn.__name__ not in args.only:
            continue
        started = time.monotonic()
        try:
            fn(args)
            print(f"PASS {fn.__name__} ({time.monotonic() - started:.1f} s)", flush=True)
        except Failure as e:
            failed += 1
            print(f"FAIL {fn.__name__}: {e}", flush=True)
        except Exception as e:  # a client error is a failure of the check, not of the script
            failed += 1
            print(f"FAIL {fn.__name__}: {type(e).__name__}: {e}", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
