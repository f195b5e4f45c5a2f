#!/usr/bin/env python3
"""An XEP-0114 component made with slixmpp's ComponentXMPP: echoes chat messages back ("echo: …")
and, when a body says "forge", tries to send a message with a `from` outside its own domain.
Prints JSON lines: {"event": "connected"} once the handshake succeeded, {"event": "refused",
"reason": …} if the server closed the stream, {"event": "message", …} for each message."""

import argparse
import asyncio
import json
import sys

from slixmpp.componentxmpp import ComponentXMPP


def say(**kw):
    print(json.dumps(kw), flush=True)


class Echo(ComponentXMPP):
    def __init__(self, jid, secret, host, port, forge_as):
        super().__init__(jid, secret, host, port)
        self.forge_as = forge_as
        self.add_event_handler("session_start", lambda _e: say(event="connected"))
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("stream_error", lambda e: say(event="refused", reason=e["condition"]))
        self.add_event_handler("disconnected", lambda _e: say(event="disconnected"))

    def on_message(self, msg):
        say(event="message", **{"from": str(msg["from"]), "to": str(msg["to"]), "body": msg["body"]})
        if msg["type"] not in ("chat", "normal"):
            return
        if msg["body"] == "forge":
            self.send_message(mto=msg["from"], mbody="forged", mtype="chat", mfrom=self.forge_as)
        else:
            self.send_message(mto=msg["from"], mbody=f"echo: {msg['body']}", mtype="chat", mfrom=msg["to"])


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jid", required=True)
    ap.add_argument("--secret", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--forge-as", default="")
    ap.add_argument("--seconds", type=float, default=30)
    a = ap.parse_args()
    xmpp = Echo(a.jid, a.secret, "127.0.0.1", a.port, a.forge_as)
    xmpp.connect()
    await asyncio.sleep(a.seconds)
    xmpp.disconnect()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
