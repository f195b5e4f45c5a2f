#!/usr/bin/env python3
"""XEP-0479 (XMPP Compliance Suites 2023) probe for a server: the Core, IM and Mobile suites at the Advanced
Server level, and the A/V Calling suite's STUN/TURN discovery. Logs in as two existing accounts and checks each requirement on the wire, one line per row.

Usage:
  compliance.py --domain example.org --host 127.0.0.1 --port 5222 [--direct-tls-port 5223] \
      --user alice --password pw --user2 bob [--ca-file ca.pem] [--json]

Exit status 0 whatever the score (the caller decides what must pass); 2 if the probe itself cannot log in.
It works against any server (we run it against Prosody and ejabberd too): it only speaks the protocols.
"""

import argparse
import asyncio
import base64
import hashlib
import json
import sys

from xmpp_raw import CLIENT_NS, Stream, XmppError, error_condition, esc, q

DISCO_INFO = "http://jabber.org/protocol/disco#info"
DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
CAPS = "http://jabber.org/protocol/caps"
PUBSUB = "http://jabber.org/protocol/pubsub"
MUC = "http://jabber.org/protocol/muc"

# (id, suite, provider, what the suite calls it)
ROWS = [
    ("rfc6120", "core", "RFC 6120", "Core features (STARTTLS, SASL, resource binding)"),
    ("rfc7590", "core", "RFC 7590", "TLS 1.2 or later"),
    ("xep0368", "core", "XEP-0368", "Direct TLS"),
    ("xep0030", "core", "XEP-0030", "Feature discovery"),
    ("xep0115", "core", "XEP-0115", "Feature broadcasts (server caps)"),
    ("xep0114", "core", "XEP-0114", "Server extensibility (components)"),
    ("xep0163", "core", "XEP-0163", "Event publishing (PEP)"),
    ("rfc6121", "im", "RFC 6121", "Core IM (roster, presence)"),
    ("xep0054", "im", "XEP-0054", "vcard-temp"),
    ("xep0398", "im", "XEP-0398, XEP-0153", "User avatar compatibility"),
    ("xep0280", "im", "XEP-0280", "Outbound message synchronization (carbons)"),
    ("xep0191", "im", "XEP-0191", "User blocking"),
    ("xep0045", "im", "XEP-0045, XEP-0249", "Group chat"),
    ("xep0402", "im", "XEP-0048, XEP-0402", "Bookmarks (advanced group chat)"),
    ("xep0313muc", "im", "XEP-0313", "Group chat history from the room's archive"),
    ("xep0410", "im", "XEP-0410", "MUC self-ping"),
    ("xep0223", "im", "XEP-0223", "Persistent storage of private data via PubSub"),
    ("xep0049", "im", "XEP-0049", "Private XML storage"),
    ("xep0198", "im+mobile", "XEP-0198", "Stream management"),
    ("xep0313", "im", "XEP-0313", "History storage / retrieval (MAM)"),
    ("xep0363", "im", "XEP-0363", "File upload"),
    ("xep0352", "mobile", "XEP-0352", "Client state indication"),
    ("xep0357", "mobile", "XEP-0357", "Third-party push notifications"),
    ("xep0215", "av", "XEP-0215", "STUN/TURN server discovery (A/V calling)"),
]


class Probe:
    def __init__(self, args):
        self.a = args
        self.results = {}
        self.server_info = None
        self.account_info = None
        self.items = None
        self.muc = None

    def stream(self):
        return Stream(self.a.domain, self.a.ca_file)

    async def login(self, user, password, resource, direct=False):
        s = self.stream()
        port = self.a.direct_tls_port if direct else self.a.port
        await s.connect(self.a.host, port, direct_tls=direct)
        await s.login(user, password, resource)
        return s

    def put(self, rid, ok, detail):
        self.results[rid] = (bool(ok), detail)

    async def disco_info(self, s, to, node=None):
        node_attr = f" node='{esc(node)}'" if node else ""
        el = await s.iq("get", f"<query xmlns='{DISCO_INFO}'{node_attr}/>", to=to)
        return el.find(q(DISCO_INFO, "query"))

    @staticmethod
    def features(query):
        return {f.get("var") for f in query.iter(q(DISCO_INFO, "feature"))} if query is not None else set()

    @staticmethod
    def identities(query):
        return {(i.get("category"), i.get("type")) for i in query.iter(q(DISCO_INFO, "identity"))}

    async def run(self):
        try:
            s = await self.login(self.a.user, self.a.password, "probe-1")
        except (XmppError, OSError, asyncio.TimeoutError) as e:
            print(f"compliance: cannot log in as {self.a.user}@{self.a.domain}: {e}", file=sys.stderr)
            return 2
        self.put("rfc6120", True, f"bound {s.jid}")
        self.put("rfc7590", s.tls_version in ("TLSv1.2", "TLSv1.3"), s.tls_version)
        checks = [self.direct_tls, self.disco, self.caps, self.component, self.pep, self.im_core, self.vcard,
                  self.avatar_compat, self.carbons, self.blocking, self.groupchat, self.bookmarks,
                  self.muc_archive, self.self_ping, self.private_pep, self.private_xml, self.stream_management,
                  self.mam, self.upload, self.csi, self.push, self.external_services]
        for check in checks:
            try:
                await check(s)
            except (XmppError, OSError, asyncio.TimeoutError, KeyError, AttributeError) as e:
                rid = check.__doc__.split(":")[0]
                if rid not in self.results:
                    self.put(rid, False, f"{type(e).__name__}: {e}")
            if s.closed:  # a check that upset the server must not fail the ones after it
                await s.close()
                s = await self.login(self.a.user, self.a.password, "probe-1")
        await s.close()
        return 0

    async def direct_tls(self, _s):
        """xep0368: log in on the direct TLS port"""
        if not self.a.direct_tls_port:
            return self.put("xep0368", False, "no --direct-tls-port given")
        s = await self.login(self.a.user, self.a.password, "probe-direct", direct=True)
        self.put("xep0368", True, f"{s.tls_version}, bound {s.jid}")
        await s.close()

    async def disco(self, s):
        """xep0030: server disco#info"""
        self.server_info = await self.disco_info(s, self.a.domain)
        self.account_info = await self.disco_info(s, f"{self.a.user}@{self.a.domain}")
        ids = self.identities(self.server_info)
        self.put("xep0030", ("server", "im") in ids and DISCO_INFO in self.features(self.server_info),
                 f"identities {sorted(ids)}")

    async def caps(self, s):
        """xep0115: caps in stream features with a verification string that matches disco#info"""
        c = s.features.find(q(CAPS, "c"))
        if c is None:
            return self.put("xep0115", False, "no <c/> in stream features")
        if c.get("hash") != "sha-1":
            return self.put("xep0115", False, f"hash {c.get('hash')!r}, expected sha-1")
        info = await self.disco_info(s, self.a.domain, f"{c.get('node')}#{c.get('ver')}")
        want = caps_ver(info)
        self.put("xep0115", want == c.get("ver"), f"ver {c.get('ver')} (disco#info hashes to {want})")

    async def component(self, _s):
        """xep0114: a component can connect"""
        if not self.a.component_port:
            return self.put("xep0114", False, "the server listens for no components (no --component-port)")
        reader, writer = await asyncio.wait_for(asyncio.open_connection(self.a.host, self.a.component_port), 10)
        writer.write(f"<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' "
                     f"to='probe.{esc(self.a.domain)}'>".encode())
        data = await asyncio.wait_for(reader.read(4096), 10)
        writer.close()
        self.put("xep0114", b"id=" in data, data[:120].decode(errors="replace"))

    async def pep(self, s):
        """xep0163: PEP identity on the account, publish and read back an item"""
        if ("pubsub", "pep") not in self.identities(self.account_info):
            return self.put("xep0163", False, "the account has no pubsub/pep identity")
        node = "urn:xmpp:hearth:compliance-probe"
        await s.iq("set", f"<pubsub xmlns='{PUBSUB}'><publish node='{node}'><item id='current'>"
                          f"<probe xmlns='{node}'>1</probe></item></publish></pubsub>")
        el = await s.iq("get", f"<pubsub xmlns='{PUBSUB}'><items node='{node}'/></pubsub>")
        self.put("xep0163", el.find(f".//{q(node, 'probe')}") is not None, "published and read back")

    async def im_core(self, s):
        """rfc6121: roster get, initial presence echoed to the sender"""
        el = await s.iq("get", "<query xmlns='jabber:iq:roster'/>")
        if el.find(q("jabber:iq:roster", "query")) is None:
            return self.put("rfc6121", False, "roster result without <query/>")
        s.send("<presence/>")
        await s.wait_for(lambda e: e.tag == q(CLIENT_NS, "presence") and e.get("from") == s.jid, 10)
        self.put("rfc6121", True, "roster and presence")

    async def vcard(self, s):
        """xep0054: set and read back a vCard"""
        ns = "vcard-temp"
        await s.iq("set", f"<vCard xmlns='{ns}'><NICKNAME>probe</NICKNAME></vCard>")
        el = await s.iq("get", f"<vCard xmlns='{ns}'/>")
        nick = el.find(f"{q(ns, 'vCard')}/{q(ns, 'NICKNAME')}")
        self.put("xep0054", nick is not None and nick.text == "probe", "set and read back")

    async def avatar_compat(self, _s):
        """xep0398: urn:xmpp:pep-vcard-conversion:0 on the account"""
        ok = "urn:xmpp:pep-vcard-conversion:0" in self.features(self.account_info)
        self.put("xep0398", ok, "feature advertised" if ok else "feature not advertised")

    async def carbons(self, s):
        """xep0280: a message sent from one resource is copied to the other"""
        ns = "urn:xmpp:carbons:2"
        if ns not in self.features(self.server_info) and ns not in self.features(self.account_info):
            return self.put("xep0280", False, "urn:xmpp:carbons:2 not advertised")
        other = await self.login(self.a.user, self.a.password, "probe-2")
        try:
            for st in (s, other):
                await st.iq("set", f"<enable xmlns='{ns}'/>")
                st.send("<presence/>")
            peer = f"{self.a.user2}@{self.a.domain}"
            s.send(f"<message type='chat' to='{peer}' id='carbon-probe'><body>carbon probe</body></message>")
            el = await other.wait_for(lambda e: e.tag == q(CLIENT_NS, "message")
                                      and e.find(q(ns, "sent")) is not None, 10)
            fwd = el.find(f"{q(ns, 'sent')}/{{urn:xmpp:forward:0}}forwarded/{q(CLIENT_NS, 'message')}")
            self.put("xep0280", fwd is not None and fwd.get("id") == "carbon-probe", "sent carbon arrived")
        finally:
            await other.close()

    async def blocking(self, s):
        """xep0191: blocklist retrieval"""
        ns = "urn:xmpp:blocking"
        el = await s.iq("get", f"<blocklist xmlns='{ns}'/>")
        self.put("xep0191", el.find(q(ns, "blocklist")) is not None, "blocklist returned")

    async def find_muc(self, s):
        if self.muc is None:
            items = await s.iq("get", f"<query xmlns='{DISCO_ITEMS}'/>", to=self.a.domain)
            self.items = [i.get("jid") for i in items.iter(q(DISCO_ITEMS, "item"))]
            self.muc = ""
            for jid in self.items:
                info = await self.disco_info(s, jid)
                if ("conference", "text") in self.identities(info):
                    self.muc, self.muc_features = jid, self.features(info)
                    break
        if not self.muc:
            raise XmppError(f"no conference/text service among the server's items {self.items}")
        return self.muc

    async def groupchat(self, s):
        """xep0045: join a room on the server's MUC service"""
        muc = await self.find_muc(s)
        room = f"probe-room@{muc}/probe"
        s.send(f"<presence to='{room}'><x xmlns='{MUC}'/></presence>")
        el = await s.wait_for(lambda e: e.tag == q(CLIENT_NS, "presence") and e.get("from") == room, 15)
        codes = {st.get("code") for st in el.iter(f"{{{MUC}#user}}status")}
        self.put("xep0045", "110" in codes, f"joined {room}, status codes {sorted(codes)}")

    async def bookmarks(self, _s):
        """xep0402: urn:xmpp:bookmarks:1#compat on the account"""
        ok = "urn:xmpp:bookmarks:1#compat" in self.features(self.account_info)
        self.put("xep0402", ok, "feature advertised" if ok else "feature not advertised")

    async def muc_archive(self, s):
        """xep0313muc: the MUC service advertises urn:xmpp:mam:2"""
        await self.find_muc(s)
        self.put("xep0313muc", "urn:xmpp:mam:2" in self.muc_features, f"features of {self.muc}")

    async def self_ping(self, s):
        """xep0410: the MUC service advertises self-ping optimisation"""
        await self.find_muc(s)
        ok = f"{MUC}#self-ping-optimization" in self.muc_features
        self.put("xep0410", ok, f"features of {self.muc}")

    async def private_pep(self, _s):
        """xep0223: publish-options on the account's PEP service"""
        feats = self.features(self.account_info) | self.features(self.server_info)
        ok = f"{PUBSUB}#publish-options" in feats
        self.put("xep0223", ok, "pubsub#publish-options advertised" if ok else "publish-options not advertised")

    async def private_xml(self, s):
        """xep0049: store and read back private XML"""
        ns = "jabber:iq:private"
        await s.iq("set", f"<query xmlns='{ns}'><probe xmlns='urn:xmpp:hearth:probe'>1</probe></query>")
        el = await s.iq("get", f"<query xmlns='{ns}'><probe xmlns='urn:xmpp:hearth:probe'/></query>")
        self.put("xep0049", el.find(".//{urn:xmpp:hearth:probe}probe") is not None, "stored and read back")

    async def stream_management(self, _s):
        """xep0198: enable with resumption, acks, resume on a new connection"""
        ns = "urn:xmpp:sm:3"
        s = await self.login(self.a.user, self.a.password, "probe-sm")
        try:
            if s.features.find(q(ns, "sm")) is None:
                return self.put("xep0198", False, "no <sm xmlns='urn:xmpp:sm:3'/> in stream features")
            s.send(f"<enable xmlns='{ns}' resume='true'/>")
            en = await s.wait_for(lambda e: e.tag in (q(ns, "enabled"), q(ns, "failed")), 10)
            if en.tag != q(ns, "enabled") or en.get("resume") not in ("true", "1"):
                return self.put("xep0198", False, f"enable answered {en.tag} resume={en.get('resume')}")
            await s.iq("get", "<ping xmlns='urn:xmpp:ping'/>", to=self.a.domain)
            s.send(f"<r xmlns='{ns}'/>")
            a = await s.wait_for(lambda e: e.tag == q(ns, "a"), 10)
            if a.get("h") != "1":
                return self.put("xep0198", False, f"after one IQ the server counted h={a.get('h')}")
            s.writer.transport.abort()  # the link dies without a goodbye
            r = self.stream()
            await r.connect(self.a.host, self.a.port)
            await r.authenticate(self.a.user, self.a.password)
            r.send(f"<resume xmlns='{ns}' previd='{esc(en.get('id'))}' h='0'/>")
            res = await r.wait_for(lambda e: e.tag in (q(ns, "resumed"), q(ns, "failed")), 10)
            self.put("xep0198", res.tag == q(ns, "resumed"), f"resume answered {res.tag.split('}')[1]}")
            await r.close()
        finally:
            await s.close()

    async def mam(self, s):
        """xep0313: query the account's archive"""
        ns = "urn:xmpp:mam:2"
        if ns not in self.features(self.account_info):
            return self.put("xep0313", False, "urn:xmpp:mam:2 not advertised on the account")
        el = await s.iq("set", f"<query xmlns='{ns}' queryid='probe'/>", timeout=15)
        self.put("xep0313", el.find(q(ns, "fin")) is not None, "query answered with <fin/>")

    async def upload(self, s):
        """xep0363: an upload service hands out a slot"""
        ns = "urn:xmpp:http:upload:0"
        if self.items is None:
            items = await s.iq("get", f"<query xmlns='{DISCO_ITEMS}'/>", to=self.a.domain)
            self.items = [i.get("jid") for i in items.iter(q(DISCO_ITEMS, "item"))]
        for jid in self.items + [self.a.domain]:
            if ns in self.features(await self.disco_info(s, jid)):
                el = await s.iq("get", f"<request xmlns='{ns}' filename='probe.txt' size='5' "
                                       f"content-type='text/plain'/>", to=jid)
                put = el.find(f"{q(ns, 'slot')}/{q(ns, 'put')}")
                return self.put("xep0363", put is not None and put.get("url", "").startswith("https://"),
                                f"slot from {jid}")
        self.put("xep0363", False, "no service advertises urn:xmpp:http:upload:0")

    async def csi(self, s):
        """xep0352: csi in stream features; inactive and active are accepted"""
        ns = "urn:xmpp:csi:0"
        if s.features.find(q(ns, "csi")) is None:
            return self.put("xep0352", False, "no <csi xmlns='urn:xmpp:csi:0'/> in stream features")
        s.send(f"<inactive xmlns='{ns}'/>")
        s.send(f"<active xmlns='{ns}'/>")
        await s.iq("get", "<ping xmlns='urn:xmpp:ping'/>", to=self.a.domain)
        self.put("xep0352", True, "inactive/active accepted, stream alive")

    async def push(self, _s):
        """xep0357: urn:xmpp:push:0 on the account"""
        ok = "urn:xmpp:push:0" in self.features(self.account_info)
        self.put("xep0357", ok, "feature advertised" if ok else "feature not advertised")

    async def external_services(self, s):
        """xep0215: the server lists a STUN and a TURN service, the TURN one with credentials"""
        ns = "urn:xmpp:extdisco:2"
        if ns not in self.features(self.server_info):
            return self.put("xep0215", False, "urn:xmpp:extdisco:2 not advertised by the server")
        el = await s.iq("get", f"<services xmlns='{ns}'/>", to=self.a.domain)
        services = list(el.iter(q(ns, "service")))
        kinds = {x.get("type") for x in services}
        turn = [x for x in services if x.get("type") in ("turn", "turns")]
        creds = [x for x in turn if x.get("username") and x.get("password")]
        if not creds and turn:
            # §3.3: credentials on request, when the list carries none.
            t = turn[0]
            el = await s.iq("get", f"<credentials xmlns='{ns}'><service type='{esc(t.get('type'))}' "
                                   f"host='{esc(t.get('host'))}'/></credentials>", to=self.a.domain)
            creds = [x for x in el.iter(q(ns, "service")) if x.get("username") and x.get("password")]
        self.put("xep0215", "stun" in kinds and bool(creds),
                 f"types {sorted(k for k in kinds if k)}, TURN credentials {'issued' if creds else 'missing'}")


def caps_ver(query):
    """XEP-0115 §5.1 verification string of a disco#info result (identities, features, forms)."""
    ids = sorted(f"{i.get('category')}/{i.get('type')}/{i.get('{http://www.w3.org/XML/1998/namespace}lang') or ''}"
                 f"/{i.get('name') or ''}" for i in query.iter(q(DISCO_INFO, "identity")))
    text = "".join(f"{i}<" for i in ids)
    text += "".join(f"{f}<" for f in sorted({f.get('var') for f in query.iter(q(DISCO_INFO, 'feature'))}))
    forms = []
    for x in query.iter("{jabber:x:data}x"):
        fields = {f.get("var"): sorted(v.text or "" for v in f.iter("{jabber:x:data}value"))
                  for f in x.iter("{jabber:x:data}field")}
        form_type = (fields.pop("FORM_TYPE", [""]) or [""])[0]
        body = f"{form_type}<" + "".join(f"{var}<" + "".join(f"{v}<" for v in vals)
                                         for var, vals in sorted(fields.items()))
        forms.append((form_type, body))
    text += "".join(body for _, body in sorted(forms))
    return base64.b64encode(hashlib.sha1(text.encode()).digest()).decode()




def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--domain", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=5222)
    ap.add_argument("--direct-tls-port", type=int)
    ap.add_argument("--component-port", type=int)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--user2", required=True, help="a second account, the other side of conversations")
    ap.add_argument("--ca-file", help="trust this certificate (a test server's self-signed one)")
    ap.add_argument("--json", action="store_true", help="one JSON object per row instead of a table")
    a = ap.parse_args()
    probe = Probe(a)
    code = asyncio.run(probe.run())
    if code:
        return code
    met = 0
    for rid, suite, provider, title in ROWS:
        ok, detail = probe.results.get(rid, (False, "not checked"))
        met += ok
        if a.json:
            print(json.dumps({"id": rid, "suite": suite, "provider": provider, "title": title,
                              "pass": ok, "detail": detail}))
        else:
            print(f"{'PASS' if ok else 'FAIL'}  {suite:<9} {provider:<20} {title} — {detail}")
    if not a.json:
        print(f"compliance: {met} of {len(ROWS)} XEP-0479 Advanced Server (Core, IM, Mobile) requirements met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
