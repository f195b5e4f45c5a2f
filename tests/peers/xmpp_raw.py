"""A small XMPP client of our own, for probes that need to see the wire: stream features, nonzas, exact
replies. STARTTLS or direct TLS, SASL SCRAM-SHA-256 / SCRAM-SHA-1 (PLAIN only if nothing else is offered,
always inside TLS), resource binding. Used by compliance.py; knows no server in particular.
"""

import asyncio
import base64
import hashlib
import hmac
import os
import ssl
import xml.etree.ElementTree as ET

STREAM_NS = "http://etherx.jabber.org/streams"
CLIENT_NS = "jabber:client"
TLS_NS = "urn:ietf:params:xml:ns:xmpp-tls"
SASL_NS = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND_NS = "urn:ietf:params:xml:ns:xmpp-bind"


class XmppError(Exception):
    pass


def q(ns, name):
    """Clark notation: {ns}name."""
    return f"{{{ns}}}{name}"


def esc(text):
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("'", "&apos;").replace('"', "&quot;"))


class Stream:
    """One client stream. `features` holds the last <stream:features>; `received` every top-level element
    not yet consumed by a waiter, so probes can look for what arrived unasked (pushes, carbons)."""

    def __init__(self, domain, cafile):
        self.domain = domain
        self.ctx = ssl.create_default_context(cafile=cafile) if cafile else ssl.create_default_context()
        self.reader = None
        self.writer = None
        self.parser = None
        self.depth = 0
        self.features = None
        self.received = []
        self.jid = None
        self.tls_version = None
        self.closed = False
        self._counter = 0

    def next_id(self, prefix="p"):
        self._counter += 1
        return f"{prefix}{self._counter}"

    async def connect(self, host, port, direct_tls=False):
        if direct_tls:
            self.reader, self.writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=self.ctx, server_hostname=self.domain,
                                        ssl_handshake_timeout=10), 15)
        else:
            self.reader, self.writer = await asyncio.wait_for(asyncio.open_connection(host, port), 15)
        await self._open()
        if not direct_tls:
            if self.features.find(q(TLS_NS, "starttls")) is None:
                raise XmppError("server offers no STARTTLS")
            self.send(f"<starttls xmlns='{TLS_NS}'/>")
            el = await self.next_element(10)
            if el.tag != q(TLS_NS, "proceed"):
                raise XmppError(f"STARTTLS refused: {el.tag}")
            await self.writer.start_tls(self.ctx, server_hostname=self.domain)
            await self._open()
        self.tls_version = self.writer.get_extra_info("ssl_object").version()

    async def _open(self):
        self.parser = ET.XMLPullParser(events=("start", "end"))
        self.depth = 0
        self.send(f"<?xml version='1.0'?><stream:stream to='{esc(self.domain)}' version='1.0' "
                  f"xmlns='{CLIENT_NS}' xmlns:stream='{STREAM_NS}'>")
        el = await self.next_element(15)
        if el.tag != q(STREAM_NS, "features"):
            raise XmppError(f"expected stream features, got {el.tag}: {ET.tostring(el)[:200]!r}")
        self.features = el

    def send(self, text):
        self.writer.write(text.encode())

    async def next_element(self, timeout):
        """The next top-level element from the socket (stream errors raise)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for event, el in self.parser.read_events():
                if event == "start":
                    self.depth += 1
                    if el.tag == q(STREAM_NS, "stream") and self.depth == 1:
                        continue
                else:
                    self.depth -= 1
                    if self.depth == 1:
                        if el.tag == q(STREAM_NS, "error"):
                            cond = [c.tag.split("}")[1] for c in el]
                            raise XmppError(f"stream error: {cond}")
                        return el
                    if self.depth == 0:
                        self.closed = True
                        raise XmppError("stream closed by server")
            left = deadline - loop.time()
            if left <= 0:
                raise asyncio.TimeoutError()
            data = await asyncio.wait_for(self.reader.read(65536), left)
            if not data:
                self.closed = True
                raise XmppError("connection closed by server")
            self.parser.feed(data)

    async def wait_for(self, pred, timeout=10):
        """The first element (already received or arriving within `timeout`) for which pred is true."""
        for i, el in enumerate(self.received):
            if pred(el):
                return self.received.pop(i)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise asyncio.TimeoutError()
            el = await self.next_element(left)
            if pred(el):
                return el
            self.received.append(el)

    async def drain(self, seconds):
        """Collects whatever arrives for `seconds` into `received`."""
        try:
            await self.wait_for(lambda _el: False, seconds)
        except asyncio.TimeoutError:
            pass

    async def login(self, user, password, resource):
        await self.authenticate(user, password)
        await self.bind(resource)

    async def authenticate(self, user, password):
        """SASL and the stream restart, without binding: what a client does before resuming a session."""
        mechs = [m.text for m in self.features.iter(q(SASL_NS, "mechanism"))]
        for mech, algo in (("SCRAM-SHA-256", hashlib.sha256), ("SCRAM-SHA-1", hashlib.sha1)):
            if mech in mechs:
                await self._scram(mech, algo, user, password)
                break
        else:
            if "PLAIN" not in mechs:
                raise XmppError(f"no usable SASL mechanism in {mechs}")
            token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
            self.send(f"<auth xmlns='{SASL_NS}' mechanism='PLAIN'>{token}</auth>")
            el = await self.next_element(10)
            if el.tag != q(SASL_NS, "success"):
                raise XmppError(f"PLAIN failed: {el.tag}")
        await self._open()

    async def bind(self, resource):
        iq = await self.iq("set", f"<bind xmlns='{BIND_NS}'><resource>{esc(resource)}</resource></bind>")
        self.jid = iq.find(f"{q(BIND_NS, 'bind')}/{q(BIND_NS, 'jid')}").text

    async def _scram(self, mech, algo, user, password):
        nonce = base64.b64encode(os.urandom(18)).decode()
        first_bare = f"n={user.replace('=', '=3D').replace(',', '=2C')},r={nonce}"
        msg = base64.b64encode(("n,," + first_bare).encode()).decode()
        self.send(f"<auth xmlns='{SASL_NS}' mechanism='{mech}'>{msg}</auth>")
        el = await self.next_element(10)
        if el.tag != q(SASL_NS, "challenge"):
            raise XmppError(f"{mech}: expected a challenge, got {el.tag}")
        server_first = base64.b64decode(el.text or "").decode()
        attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
        if not attrs["r"].startswith(nonce):
            raise XmppError(f"{mech}: server nonce does not extend ours")
        salted = hashlib.pbkdf2_hmac(algo().name, password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
        client_key = hmac.new(salted, b"Client Key", algo).digest()
        stored_key = algo(client_key).digest()
        final_bare = f"c={base64.b64encode(b'n,,').decode()},r={attrs['r']}"
        auth_message = f"{first_bare},{server_first},{final_bare}".encode()
        signature = hmac.new(stored_key, auth_message, algo).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        final = f"{final_bare},p={base64.b64encode(proof).decode()}"
        self.send(f"<response xmlns='{SASL_NS}'>{base64.b64encode(final.encode()).decode()}</response>")
        el = await self.next_element(10)
        if el.tag != q(SASL_NS, "success"):
            raise XmppError(f"{mech} failed: {el.tag}")
        server_key = hmac.new(salted, b"Server Key", algo).digest()
        expect = base64.b64encode(hmac.new(server_key, auth_message, algo).digest()).decode()
        got = dict(kv.split("=", 1) for kv in base64.b64decode(el.text or "").decode().split(","))
        if got.get("v") != expect:
            raise XmppError(f"{mech}: the server's signature is wrong")

    async def iq(self, type_, payload, to=None, timeout=10, check=True):
        """Sends an IQ and returns the reply; an error reply raises unless check=False."""
        ident = self.next_id("iq")
        to_attr = f" to='{esc(to)}'" if to else ""
        self.send(f"<iq type='{type_}' id='{ident}'{to_attr}>{payload}</iq>")
        el = await self.wait_for(lambda e: e.tag == q(CLIENT_NS, "iq") and e.get("id") == ident
                                 and e.get("type") in ("result", "error"), timeout)
        if check and el.get("type") == "error":
            raise XmppError(f"IQ error: {error_condition(el)}")
        return el

    async def close(self):
        if self.writer is None:
            return
        try:
            if not self.closed:
                self.send("</stream:stream>")
                await self.writer.drain()
            self.writer.close()
        except Exception:  # the probe is over; a broken socket changes nothing
            pass


def error_condition(el):
    err = el.find(q(CLIENT_NS, "error"))
    if err is None:
        return None
    for c in err:
        if c.tag.startswith("{urn:ietf:params:xml:ns:xmpp-stanzas}") and not c.tag.endswith("}text"):
            return c.tag.split("}")[1]
    return "unknown"
