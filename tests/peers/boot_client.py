#!/usr/bin/env python3
"""The client half of `hearth-image boot-test`: real XMPP through the port QEMU forwards to the guest.

Run by boot-test's --hook once the guest answers on 5222, with HEARTH_XMPP_PORT, HEARTH_DOMAIN,
HEARTH_ADMIN and HEARTH_ADMIN_PASSWORD in the environment (the preseed's values). It
  1. logs in as the preseeded admin,
  2. registers a second account in-band (the boot test's preseed sets registration = "open"),
  3. sends a message each way between the two and waits for both to arrive,
  4. asks for the external services (XEP-0215): a TURN service on the domain with credentials,
and exits non-zero, saying which step failed, otherwise.

Certificates: the guest makes its self-signed certificate on first boot and only port 5222 is
forwarded, so there is no other channel to fetch it from. The admin's connection therefore trusts on
first use (verification off for that one connection only, in this test only) and keeps the certificate
the guest presented; every later connection verifies against exactly that certificate, with the host
name checked against HEARTH_DOMAIN. A box that changed its certificate between connections, or one
whose certificate does not name the domain, fails the test.
"""

import asyncio
import os
import ssl
import sys
import time
import xml.etree.ElementTree as ET

import slixmpp

TIMEOUT = 60


def log(msg):
    print(f"boot_client: {msg}", flush=True)


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password, ctx, register=False):
        super().__init__(jid, password)
        self.ssl_context = ctx
        self.enable_starttls = True
        self.enable_direct_tls = False
        self.enable_plaintext = False
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0077")
        self.register_plugin("xep_0199")
        self.pem = None
        self.started = asyncio.get_event_loop().create_future()
        self.inbox = asyncio.Queue()
        self.failure = None
        if register:
            self.plugin["xep_0077"].force_registration = True
            self.add_event_handler("register", self.on_register)
        self.add_event_handler("ssl_cert", self.on_cert)
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("failed_auth", lambda _: self.fail("authentication refused"))
        self.add_event_handler("disconnected", lambda r: self.fail(f"disconnected ({r})"))
        self.add_event_handler("message", self.on_message)

    def fail(self, why):
        if not self.started.done():
            self.started.set_exception(RuntimeError(why))

    def on_cert(self, pem):
        self.pem = pem

    async def on_register(self, _form):
        iq = self.Iq()
        iq["type"] = "set"
        iq["register"]["username"] = self.boundjid.user
        iq["register"]["password"] = self.password
        try:
            await iq.send(timeout=20)
        except slixmpp.exceptions.IqError as e:
            self.fail(f"in-band registration refused: {e.iq['error']['condition']} {e.iq['error']['text']}")
            self.disconnect()

    async def on_start(self, _):
        self.send_presence()
        if not self.started.done():
            self.started.set_result(True)

    def on_message(self, msg):
        if msg["type"] in ("chat", "normal") and msg["body"]:
            self.inbox.put_nowait((str(msg["from"].bare), msg["body"]))


async def login(jid, password, port, ctx, register=False):
    c = Client(jid, password, ctx, register)
    c.connect("127.0.0.1", port)
    try:
        await asyncio.wait_for(c.started, TIMEOUT)
    except asyncio.TimeoutError:
        raise RuntimeError(f"{jid}: no session after {TIMEOUT} s")
    except RuntimeError as e:
        raise RuntimeError(f"{jid}: {e}")
    return c


async def expect(client, sender, body):
    while True:
        try:
            frm, got = await asyncio.wait_for(client.inbox.get(), TIMEOUT)
        except asyncio.TimeoutError:
            raise RuntimeError(f"{client.boundjid.bare} did not receive {body!r} from {sender} within {TIMEOUT} s")
        if frm == sender and got == body:
            return


async def main():
    env = os.environ
    port, domain = int(env["HEARTH_XMPP_PORT"]), env["HEARTH_DOMAIN"]
    admin = f"{env['HEARTH_ADMIN']}@{domain}"
    password = env["HEARTH_ADMIN_PASSWORD"]
    t0 = time.monotonic()

    # Trust on first use, for the admin's connection only (see the module comment).
    tofu = ssl.create_default_context()
    tofu.check_hostname = False
    tofu.verify_mode = ssl.CERT_NONE
    a = await login(admin, password, port, tofu)
    if not a.pem:
        raise RuntimeError("the server's certificate was not seen on the admin's connection")
    log(f"admin {admin} logged in (STARTTLS, SCRAM) in {time.monotonic() - t0:.1f} s")

    # From here on: verify against the certificate the guest presented, host name included.
    pinned = ssl.create_default_context(cadata=a.pem)
    pinned.check_hostname = True
    friend = f"friend{int(time.time()) % 100000}@{domain}"
    b = await login(friend, "boot-test-friend-password", port, pinned, register=True)
    log(f"registered {friend} in-band and logged in, certificate verified for {domain}")

    a.send_message(mto=friend, mbody="hello from the admin", mtype="chat")
    await expect(b, admin, "hello from the admin")
    b.send_message(mto=admin, mbody="hello back", mtype="chat")
    await expect(a, friend, "hello back")
    log("messages exchanged both ways")

    # Calls: hearthd points at the box's coturn and issues TURN credentials from the secret the image
    # made (XEP-0215); this proves setup configured it and hearthd's sandbox lets it read the secret.
    ns = "urn:xmpp:extdisco:2"
    iq = a.make_iq_get(ito=domain)
    ET.SubElement(iq.xml, f"{{{ns}}}services")
    reply = await iq.send(timeout=TIMEOUT)
    services = [dict(x.attrib) for x in reply.xml.iter(f"{{{ns}}}service")]
    turn = [x for x in services if x.get("type") == "turn" and x.get("username") and x.get("password")]
    if not turn or any(x.get("host") != domain or x.get("port") != "3478" for x in turn):
        raise RuntimeError(f"no TURN service with credentials on {domain}:3478 in {services}")
    log(f"external services (XEP-0215): {sorted({x['type'] + '/' + x['transport'] for x in services})}, "
        f"TURN credentials until {turn[0].get('expires')}")
    log(f"client test took {time.monotonic() - t0:.1f} s")
    for c in (a, b):
        c.disconnect()
    await asyncio.sleep(0.5)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except (RuntimeError, KeyError, ssl.SSLError, OSError) as e:
        print(f"boot_client: FAILED: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
