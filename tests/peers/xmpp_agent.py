#!/usr/bin/env python3
"""A slixmpp client driven by JSON lines, so Rust tests can play a real XMPP user.

Commands arrive on stdin, one JSON object per line, each with an "id". Replies go to stdout as
{"reply": id, "ok": bool, ...}; everything the client receives is printed as
{"event": "...", ...} lines in between. The test decides what to wait for.
"""

import argparse
import asyncio
import json
import logging
import ssl
import sys

import xml.etree.ElementTree as ET
from xml.sax.saxutils import quoteattr

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from http_client import http_request


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Agent(slixmpp.ClientXMPP):
    def __init__(self, args):
        super().__init__(args.jid, args.password)
        self.args = args
        ctx = ssl.create_default_context(cafile=args.ca_file)
        if args.tls13_only:
            ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        self.ssl_context = ctx
        self.enable_direct_tls = args.direct_tls
        self.enable_starttls = not args.direct_tls
        self.enable_plaintext = False
        if args.mechanism:
            self.plugin["feature_mechanisms"].use_mech = args.mechanism
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0199")
        self.register_plugin("xep_0054")
        self.register_plugin("xep_0077")
        self.register_plugin("xep_0280")
        self.register_plugin("xep_0191")
        if args.register:
            self.plugin["xep_0077"].force_registration = True
            self.add_event_handler("register", self.on_register)
        self.connected_future = None
        self.add_event_handler("session_start", self.on_session_start)
        self.add_event_handler("failed_auth", self.on_failed_auth)
        self.add_event_handler("disconnected", self.on_disconnected)
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("presence", self.on_presence)
        self.add_event_handler("roster_update", self.on_roster_update)
        self.add_event_handler("stream_error", self.on_stream_error)
        self.add_event_handler("blocked", lambda iq: self.on_block_push("block", iq))
        self.add_event_handler("unblocked", lambda iq: self.on_block_push("unblock", iq))
        self.add_event_handler("carbon_received", lambda m: self.on_carbon("received", m["carbon_received"]))
        self.add_event_handler("carbon_sent", lambda m: self.on_carbon("sent", m["carbon_sent"]))
        # Let the test answer subscription requests itself.
        self.roster.auto_authorize = None
        self.roster.auto_subscribe = False

    async def on_register(self, _form):
        """In-band registration (XEP-0077), after an XEP-0401 preauth token when given."""
        try:
            if self.args.token:
                # slixmpp holds back IQs other than register/bind before login; the XEP-0401
                # preauth IQ must go out before registration, so let it through.
                self._always_send_everything = True
                pre = self.Iq()
                pre["type"] = "set"
                pre.xml.append(ET.Element("{urn:xmpp:pars:0}preauth", token=self.args.token))
                await pre.send(timeout=10)
            iq = self.Iq()
            iq["type"] = "set"
            iq["register"]["username"] = self.boundjid.user
            iq["register"]["password"] = self.password
            await iq.send(timeout=10)
            self._always_send_everything = False
            emit({"event": "registered"})
        except IqError as e:
            emit({"event": "register_failed", "condition": e.iq["error"]["condition"], "text": e.iq["error"]["text"]})
            self.settle(False, error="register-failed", condition=e.iq["error"]["condition"])
            self.disconnect()
        except IqTimeout:
            emit({"event": "register_failed", "condition": "timeout", "text": ""})
            self.settle(False, error="register-failed", condition="timeout")
            self.disconnect()

    def settle(self, ok, **extra):
        if self.connected_future and not self.connected_future.done():
            self.connected_future.set_result((ok, extra))

    async def on_session_start(self, _):
        self.settle(True, jid=str(self.boundjid))

    def on_failed_auth(self, _):
        self.settle(False, error="auth-failed")

    def on_disconnected(self, reason):
        emit({"event": "disconnected", "reason": str(reason)})
        self.settle(False, error="disconnected")

    def on_stream_error(self, err):
        emit({"event": "stream_error", "condition": err["condition"], "text": err["text"]})

    def on_message(self, msg):
        delay = msg.xml.find("{urn:xmpp:delay}delay")
        emit({
            "event": "message", "from": str(msg["from"]), "to": str(msg["to"]), "type": msg["type"],
            "body": msg["body"], "delayed": delay is not None,
            "error": msg["error"]["condition"] if msg["type"] == "error" else None,
        })

    def on_carbon(self, direction, inner):
        """A XEP-0280 copy (the wrapper was checked to come from our own account)."""
        emit({"event": "carbon", "direction": direction, "from": str(inner["from"]),
              "to": str(inner["to"]), "body": inner["body"]})

    def on_block_push(self, kind, iq):
        """A XEP-0191 push: the blocklist changed on another of our sessions."""
        child = iq.xml.find("{urn:xmpp:blocking}" + kind)
        jids = [i.get("jid") for i in child] if child is not None else []
        emit({"event": "block_push", "kind": kind, "jids": jids})

    def on_presence(self, pres):
        emit({"event": "presence", "from": str(pres["from"]), "type": pres["type"], "status": pres["status"]})

    def on_roster_update(self, iq):
        items = {str(j): dict(i) for j, i in iq["roster"]["items"].items()}
        emit({"event": "roster_push", "items": {k: {"subscription": v.get("subscription"), "ask": v.get("ask")} for k, v in items.items()}})


def omemo_plugin_class():
    """slixmpp-omemo's plugin with what a client supplies: in-memory storage (each agent is a new
    device) and blind trust before verification, as Conversations does by default."""
    from omemo.storage import Just, Nothing, Storage
    from slixmpp.plugins import register_plugin
    from slixmpp_omemo import TrustLevel, XEP_0384

    class MemoryStorage(Storage):
        def __init__(self):
            super().__init__()
            self.data = {}

        async def _load(self, key):
            return Just(self.data[key]) if key in self.data else Nothing()

        async def _store(self, key, value):
            self.data[key] = value

        async def _delete(self, key):
            self.data.pop(key, None)

    class OmemoClient(XEP_0384):
        default_config = {"fallback_message": "This message is OMEMO encrypted."}

        def plugin_init(self):
            self.memory = MemoryStorage()
            super().plugin_init()

        @property
        def storage(self):
            return self.memory

        @property
        def _btbv_enabled(self):
            return True

        async def _devices_blindly_trusted(self, blindly_trusted, identifier):
            emit({"event": "omemo_trusted", "devices": len(blindly_trusted)})

        async def _prompt_manual_trust(self, manually_trusted, identifier):
            manager = await self.get_session_manager()
            for d in manually_trusted:
                await manager.set_trust(d.bare_jid, d.identity_key, TrustLevel.BLINDLY_TRUSTED.value)

    register_plugin(OmemoClient)


async def omemo_command(agent, c, cmd):
    if c == "omemo_setup":
        # Before the first presence: the plugin asks for device-list notifications (+notify in
        # the caps) and publishes this device's list and bundle in both OMEMO versions.
        omemo_plugin_class()
        for name in ("xep_0004", "xep_0060", "xep_0115", "xep_0163"):
            agent.register_plugin(name)
        agent.register_plugin("xep_0384")
        await agent.plugin["xep_0115"].update_caps()
        manager = await agent.plugin["xep_0384"].get_session_manager()
        info = await manager.get_own_device_information()
        omemo = agent.plugin["xep_0384"]

        async def on_message(msg):
            namespaces = omemo.is_encrypted(msg)
            if not namespaces:
                return
            try:
                plain, device = await omemo.decrypt_message(msg)
                emit({"event": "omemo_message", "from": str(msg["from"]), "body": plain["body"],
                      "namespaces": sorted(namespaces), "device": device.device_id})
            except Exception as e:  # the test wants to see why
                emit({"event": "omemo_error", "error": f"{type(e).__name__}: {e}"})
        agent.add_event_handler("message", on_message)
        return {"ok": True, "device": info[0].device_id}
    if c == "omemo_send":
        omemo = agent.plugin["xep_0384"]
        msg = agent.make_message(mto=cmd["to"], mtype="chat")
        msg["body"] = cmd["body"]
        to = slixmpp.JID(cmd["to"])
        await omemo.refresh_device_lists({to}, force_download=True)
        encrypted, errors = await omemo.encrypt_message(msg, to)
        if encrypted is None:
            return {"ok": False, "error": f"nothing to send; errors: {errors}"}
        encrypted.send()
        return {"ok": True, "errors": [str(e) for e in errors],
                "namespaces": sorted(omemo.is_encrypted(encrypted))}
    return None


MUC_USER = "{http://jabber.org/protocol/muc#user}"


def muc_setup(agent):
    """XEP-0045 and XEP-0249 plugins, and events for what a room says (status codes, items,
    invitations, subject), once per agent."""
    if getattr(agent, "muc_ready", False):
        return
    agent.muc_ready = True
    for name in ("xep_0004", "xep_0045", "xep_0249", "xep_0313"):
        agent.register_plugin(name)

    def on_presence(pres):
        x = pres.xml.find(MUC_USER + "x")
        if x is None:
            return
        item = x.find(MUC_USER + "item")
        destroy = x.find(MUC_USER + "destroy")
        emit({"event": "muc_presence", "from": str(pres["from"]), "type": pres["type"],
              "codes": sorted(s.get("code") for s in x.findall(MUC_USER + "status")),
              "role": item.get("role") if item is not None else None,
              "affiliation": item.get("affiliation") if item is not None else None,
              "jid": item.get("jid") if item is not None else None,
              "destroyed": destroy is not None,
              "destroy": destroy.get("jid") if destroy is not None else None,
              "reason": destroy.findtext(MUC_USER + "reason") if destroy is not None else None})
    # slixmpp's xep_0045 silences the generic presence event for occupants: match them directly.
    agent.register_handler(Callback("muc-presence", MatchXPath(
        "{jabber:client}presence/{http://jabber.org/protocol/muc#user}x"), on_presence))

    def on_groupchat(msg):
        sid = msg.xml.find("{urn:xmpp:sid:0}stanza-id")
        emit({"event": "groupchat", "from": str(msg["from"]), "to": str(msg["to"]), "body": msg["body"],
              "id": msg["id"], "delayed": msg.xml.find("{urn:xmpp:delay}delay") is not None,
              "stanza_id": sid.get("id") if sid is not None else None,
              "by": sid.get("by") if sid is not None else None})
    agent.add_event_handler("groupchat_message", on_groupchat)
    agent.add_event_handler("groupchat_invite", lambda m: emit({
        "event": "muc_invite", "direct": False, "room": str(m["from"].bare),
        "from": str(m["muc"]["invite"]["from"]), "reason": m["muc"]["invite"]["reason"]}))
    agent.add_event_handler("groupchat_direct_invite", lambda m: emit({
        "event": "muc_invite", "direct": True, "room": str(m["groupchat_invite"]["jid"]),
        "from": str(m["from"]), "reason": m["groupchat_invite"]["reason"]}))


async def muc_command(agent, c, cmd):
    """Group chat commands: a user in rooms on the server's XEP-0045 service."""
    from slixmpp.exceptions import PresenceError
    muc_setup(agent)
    muc = agent.plugin["xep_0045"]
    room = slixmpp.JID(cmd["room"]) if "room" in cmd else None
    try:
        if c == "muc_setup":
            return {"ok": True}
        if c == "muc_join":
            pres, subject, occupants, history = await muc.join_muc_wait(
                room, cmd["nick"], password=cmd.get("password"), maxstanzas=cmd.get("maxstanzas"),
                timeout=cmd.get("timeout", 15))
            x = pres.xml.find(MUC_USER + "x")
            item = x.find(MUC_USER + "item")
            hist = []
            for m in history:
                sid = m.xml.find("{urn:xmpp:sid:0}stanza-id")
                hist.append({"body": m["body"], "from": str(m["from"]),
                             "stanza_id": sid.get("id") if sid is not None else None})
            return {"ok": True, "codes": sorted(s.get("code") for s in x.findall(MUC_USER + "status")),
                    "role": item.get("role"), "affiliation": item.get("affiliation"),
                    "occupants": sorted(str(p["from"].resource) for p in occupants),
                    "history": hist, "subject": subject["subject"]}
        if c == "muc_configure":
            form = await muc.get_room_config(room, timeout=10)
            values = {}
            for var, value in cmd.get("fields", {}).items():
                values[var] = value
            if values:
                form.set_values(values)
            await muc.set_room_config(room, form, timeout=10)
            return {"ok": True}
        if c == "muc_send":
            msg = agent.make_message(mto=room, mbody=cmd["body"], mtype="groupchat")
            msg.send()
            return {"ok": True, "id": msg["id"]}
        if c == "muc_leave":
            muc.leave_muc(room, cmd["nick"])
            return {"ok": True}
        if c == "muc_invite":
            muc.invite(room, cmd["to"], cmd.get("reason", ""))
            return {"ok": True}
        if c == "muc_invite_direct":
            agent.plugin["xep_0249"].send_invitation(slixmpp.JID(cmd["to"]), room, reason=cmd.get("reason"))
            return {"ok": True}
        if c == "muc_affiliation":
            await muc.set_affiliation(room, cmd["affiliation"], jid=cmd["jid"], reason=cmd.get("reason", ""), timeout=10)
            return {"ok": True}
        if c == "muc_role":
            await muc.set_role(room, cmd["nick"], cmd["role"], reason=cmd.get("reason", ""), timeout=10)
            return {"ok": True}
        if c == "muc_list":
            jids = await muc.get_affiliation_list(room, cmd["affiliation"], timeout=10)
            return {"ok": True, "jids": sorted(str(j) for j in jids)}
        if c == "muc_destroy":
            await muc.destroy(room, cmd.get("reason", ""), cmd.get("alt"), timeout=10)
            return {"ok": True}
        if c == "muc_mam":
            # XEP-0313 on the room: every page until complete.
            results, after = [], None
            while True:
                iq = agent.make_iq_set(ito=room)
                qid = f"q{len(results)}-{cmd.get('id')}"
                iq["mam"]["queryid"] = qid
                iq["mam"]["rsm"]["max"] = str(cmd.get("max", 50))
                if after:
                    iq["mam"]["rsm"]["after"] = after
                page = []

                def on_result(msg, qid=qid, page=page):
                    r = msg.xml.find("{urn:xmpp:mam:2}result")
                    if r is None or r.get("queryid") != qid:
                        return
                    inner = r.find("{urn:xmpp:forward:0}forwarded").find("{jabber:client}message")
                    body = inner.find("{jabber:client}body")
                    page.append({"id": r.get("id"), "from": inner.get("from"),
                                 "body": body.text if body is not None else None})
                agent.register_handler(Callback(f"muc-mam-{qid}", MatchXPath("{jabber:client}message/{urn:xmpp:mam:2}result"), on_result))
                try:
                    res = await iq.send(timeout=20)
                finally:
                    agent.remove_handler(f"muc-mam-{qid}")
                results.extend(page)
                fin = res.xml.find("{urn:xmpp:mam:2}fin")
                last = fin.find("{http://jabber.org/protocol/rsm}set/{http://jabber.org/protocol/rsm}last")
                if fin.get("complete") in ("true", "1") or last is None:
                    return {"ok": True, "results": results}
                after = last.text
        if c == "muc_omemo_send":
            # A group message encrypted for every member's devices (members-only, non-anonymous).
            omemo = agent.plugin["xep_0384"]
            msg = agent.make_message(mto=room, mtype="groupchat")
            msg["body"] = cmd["body"]
            recipients = {slixmpp.JID(j) for j in cmd["members"]}
            await omemo.refresh_device_lists(recipients, force_download=True)
            encrypted, errors = await omemo.encrypt_message(msg, recipients)
            if encrypted is None:
                return {"ok": False, "error": f"nothing to send; errors: {errors}"}
            encrypted.send()
            return {"ok": True, "errors": [str(e) for e in errors]}
    except PresenceError as e:
        return {"ok": False, "condition": e.presence["error"]["condition"], "text": e.presence["error"]["text"]}
    except IqError as e:
        return {"ok": False, "condition": e.iq["error"]["condition"], "text": e.iq["error"]["text"]}
    except (IqTimeout, asyncio.TimeoutError):
        return {"ok": False, "condition": "timeout"}
    return None


def pubsub_error(e):
    """A refused pubsub request: the defined condition and the pubsub#errors one (XEP-0060)."""
    err = e.iq.xml.find("{jabber:client}error")
    app = [c.tag.split("}")[1] for c in err if c.tag.startswith("{http://jabber.org/protocol/pubsub#errors}")] \
        if err is not None else []
    return {"ok": False, "condition": e.iq["error"]["condition"], "app": app[0] if app else None}


async def run_command(agent, cmd):
    c = cmd["cmd"]
    if c == "connect":
        agent.connected_future = asyncio.get_event_loop().create_future()
        agent.connect(agent.args.host, agent.args.port)
        try:
            ok, extra = await asyncio.wait_for(agent.connected_future, cmd.get("timeout", 20))
        except asyncio.TimeoutError:
            return {"ok": False, "error": "timeout"}
        return {"ok": ok, **extra}
    if c == "presence":
        agent.send_presence(pstatus=cmd.get("status"), ppriority=cmd.get("priority"))
        return {"ok": True}
    if c == "unavailable":
        agent.send_presence(ptype="unavailable")
        return {"ok": True}
    if c == "message":
        msg = agent.make_message(mto=cmd["to"], mbody=cmd["body"], mtype=cmd.get("type", "chat"))
        if cmd.get("private"):
            # XEP-0280 §7 and the XEP-0334 hint: keep this one out of carbons.
            msg.xml.append(ET.Element("{urn:xmpp:carbons:2}private"))
            msg.xml.append(ET.Element("{urn:xmpp:hints}no-copy"))
        msg.send()
        return {"ok": True}
    if c in ("block", "unblock", "blocklist"):
        plugin = agent.plugin["xep_0191"]
        try:
            if c == "block":
                await plugin.block(cmd["jids"], timeout=10)
            elif c == "unblock":
                await plugin.unblock(cmd.get("jids", []), timeout=10)
            else:
                return {"ok": True, "jids": sorted(str(j) for j in await plugin.get_blocked_jids(timeout=10))}
            return {"ok": True}
        except (IqError, IqTimeout) as e:
            return {"ok": False, "error": str(e)}
    if c == "carbons":
        try:
            plugin = agent.plugin["xep_0280"]
            await (plugin.enable(timeout=10) if cmd.get("enable", True) else plugin.disable(timeout=10))
            return {"ok": True}
        except (IqError, IqTimeout) as e:
            return {"ok": False, "error": str(e)}
    if c.startswith("omemo_"):
        return await omemo_command(agent, c, cmd)
    if c == "pep_setup":
        # Entity caps with `node+notify` for each node (XEP-0163 filtered notifications); call
        # before the first presence, so the broadcast carries the caps.
        for name in ("xep_0004", "xep_0060", "xep_0115", "xep_0163"):
            agent.register_plugin(name)
        for node in cmd.get("interest", []):
            agent.plugin["xep_0163"].add_interest(node)
        await agent.plugin["xep_0115"].update_caps()

        def on_event(msg):
            ev = msg.xml.find("{http://jabber.org/protocol/pubsub#event}event")
            for items in ev.findall("{http://jabber.org/protocol/pubsub#event}items"):
                for item in items:
                    tag = item.tag.split("}")[1]
                    payload = [ET.tostring(p, encoding="unicode") for p in item]
                    emit({"event": "pep", "from": str(msg["from"]), "node": items.get("node"),
                          "kind": tag, "id": item.get("id"), "xml": payload[0] if payload else None})
        agent.register_handler(Callback("pep-events", MatchXPath(
            "{jabber:client}message/{http://jabber.org/protocol/pubsub#event}event"), on_event))
        return {"ok": True}
    if c == "publish":
        # XEP-0060 §7.1 to our own account, with publish-options (§7.1.5) when given.
        options = None
        if cmd.get("options"):
            options = agent.plugin["xep_0004"].make_form(ftype="submit")
            options.add_field(var="FORM_TYPE", ftype="hidden",
                              value="http://jabber.org/protocol/pubsub#publish-options")
            for var, value in cmd["options"].items():
                options.add_field(var=var, value=value)
        try:
            res = await agent.plugin["xep_0060"].publish(
                None, cmd["node"], id=cmd.get("item_id"), payload=ET.fromstring(cmd["xml"]),
                options=options, timeout=10)
            return {"ok": True, "item_id": res["pubsub"]["publish"]["item"]["id"]}
        except IqError as e:
            return pubsub_error(e)
        except IqTimeout:
            return {"ok": False, "condition": "timeout"}
    if c in ("bookmarks_set", "bookmarks_get"):
        # XEP-0048 bookmarks in XEP-0049 private storage, through slixmpp's own plugins.
        agent.register_plugin("xep_0049")
        agent.register_plugin("xep_0048")
        from slixmpp.plugins.xep_0048 import Bookmarks
        try:
            if c == "bookmarks_set":
                b = Bookmarks()
                for room in cmd["rooms"]:
                    b.add_conference(room["jid"], room.get("nick"), name=room.get("name"),
                                     autojoin=room.get("autojoin", False))
                await agent.plugin["xep_0048"].set_bookmarks(b, method="xep_0049", timeout=10)
                return {"ok": True}
            res = await agent.plugin["xep_0048"].get_bookmarks(method="xep_0049", timeout=10)
            rooms = [{"jid": str(conf["jid"]), "name": conf["name"], "nick": conf["nick"],
                      "autojoin": conf["autojoin"]} for conf in res["private"]["bookmarks"]["conferences"]]
            return {"ok": True, "rooms": rooms}
        except IqError as e:
            return pubsub_error(e)
        except IqTimeout:
            return {"ok": False, "condition": "timeout"}
    if c == "items":
        try:
            res = await agent.plugin["xep_0060"].get_items(
                cmd["to"], cmd["node"], max_items=cmd.get("max"), timeout=10)
            items = [{"id": i["id"], "xml": ET.tostring(i.xml[0], encoding="unicode") if len(i.xml) else None}
                     for i in res["pubsub"]["items"]]
            return {"ok": True, "items": items}
        except IqError as e:
            return pubsub_error(e)
        except IqTimeout:
            return {"ok": False, "condition": "timeout"}
    if c == "subscribe":
        agent.send_presence(pto=cmd["to"], ptype="subscribe")
        return {"ok": True}
    if c == "authorize":
        agent.send_presence(pto=cmd["to"], ptype="subscribed")
        return {"ok": True}
    if c == "roster":
        try:
            iq = await agent.get_roster(timeout=10)
        except (IqError, IqTimeout) as e:
            return {"ok": False, "error": str(e)}
        # An up-to-date client gets an empty result (XEP-0237); report the client's view, which
        # the server keeps current with pushes.
        items = {}
        for jid in agent.client_roster:
            item = agent.client_roster[jid]
            if item["subscription"] == "remove":
                continue
            items[str(jid)] = {"subscription": item["subscription"], "name": item["name"],
                               "ask": "subscribe" if item["pending_out"] else ""}
        return {"ok": True, "items": items, "ver": iq["roster"]["ver"] if iq["roster"] else None}
    if c == "ping":
        try:
            await agent.plugin["xep_0199"].ping(jid=cmd.get("to"), timeout=10)
            return {"ok": True}
        except IqError as e:
            return {"ok": False, "error": str(e), "condition": e.iq["error"]["condition"]}
        except IqTimeout as e:
            return {"ok": False, "error": str(e), "condition": "timeout"}
    if c == "disco":
        try:
            info = await agent.plugin["xep_0030"].get_info(jid=cmd.get("to", agent.boundjid.domain), timeout=10)
            return {"ok": True, "features": list(info["disco_info"]["features"])}
        except (IqError, IqTimeout) as e:
            return {"ok": False, "error": str(e)}
    if c == "storm":
        # Messages round-robin to the targets; after every `ack_every` a ping: its answer proves
        # the server has handled (delivered or durably stored) everything sent before it.
        targets, count, every = cmd["targets"], cmd["count"], cmd.get("ack_every", 10)
        sent = 0
        try:
            for i in range(count):
                agent.send_message(mto=targets[i % len(targets)], mbody=f"storm-{i}", mtype="chat")
                sent = i + 1
                if sent % every == 0:
                    await agent.plugin["xep_0199"].ping(jid=agent.boundjid.domain, timeout=10)
                    emit({"event": "acked", "upto": i})
        except Exception as e:  # the server going away mid-storm is the point of the test
            return {"ok": False, "sent": sent, "error": f"{type(e).__name__}: {e}"}
        return {"ok": True, "sent": sent}
    if c == "raw":
        agent.send_raw(cmd["xml"])
        return {"ok": True}
    if c == "disconnect":
        agent.disconnect()
        await asyncio.sleep(0.2)
        return {"ok": True}
    if c == "track_stanza_ids":
        # XEP-0359: report the id the server gave each live message (for archive tests).
        def on_live(msg):
            for sid in msg.xml.findall("{urn:xmpp:sid:0}stanza-id"):
                emit({"event": "stanza_id", "body": msg["body"], "from": str(msg["from"]),
                      "by": sid.get("by"), "sid": sid.get("id")})
        agent.add_event_handler("message", on_live)
        return {"ok": True}
    if c == "mam_page":
        # One XEP-0313 query page through slixmpp's xep_0313/xep_0059 stanzas; "before": "" asks
        # for the last page (XEP-0059 empty <before/>).
        agent.register_plugin("xep_0313")
        qid = f"q{cmd.get('id')}"
        iq = agent.make_iq_set()
        iq["mam"]["queryid"] = qid
        if cmd.get("with"):
            iq["mam"]["with"] = slixmpp.JID(cmd["with"])
        rsm = iq["mam"]["rsm"]
        rsm["max"] = str(cmd.get("max", 50))
        if cmd.get("after"):
            rsm["after"] = cmd["after"]
        if "before" in cmd:
            rsm["before"] = cmd["before"] or True
        page = []

        def on_result(msg):
            r = msg.xml.find("{urn:xmpp:mam:2}result")
            if r is None or r.get("queryid") != qid:
                return
            fwd = r.find("{urn:xmpp:forward:0}forwarded")
            delay = fwd.find("{urn:xmpp:delay}delay")
            inner = fwd.find("{jabber:client}message")
            body = inner.find("{jabber:client}body")
            page.append({"id": r.get("id"), "body": body.text if body is not None else None,
                         "from": inner.get("from"), "to": inner.get("to"),
                         "stamp": delay.get("stamp") if delay is not None else ""})

        # slixmpp's "message" event only fires for messages with a body: match results directly.
        agent.register_handler(Callback(f"mam-{qid}", MatchXPath("{jabber:client}message/{urn:xmpp:mam:2}result"), on_result))
        try:
            res = await iq.send(timeout=30)
        except (IqError, IqTimeout) as e:
            return {"ok": False, "error": str(e)}
        finally:
            agent.remove_handler(f"mam-{qid}")
        fin = res.xml.find("{urn:xmpp:mam:2}fin")
        rsm_ns = "{http://jabber.org/protocol/rsm}"
        s = fin.find(rsm_ns + "set")
        text = lambda name: (s.find(rsm_ns + name).text if s is not None and s.find(rsm_ns + name) is not None else None)
        return {"ok": True, "results": page, "complete": fin.get("complete") in ("true", "1"),
                "first": text("first"), "last": text("last"), "count": int(text("count") or -1)}
    if c == "stream_management":
        # XEP-0198 with resumption, for the next connect (slixmpp enables it after binding).
        agent.register_plugin("xep_0198")
        agent.plugin["xep_0198"].window = cmd.get("window", 5)
        return {"ok": True}
    if c == "resume":
        # Connect again after the link broke: slixmpp sends <resume/> with the id it got.
        done = asyncio.get_event_loop().create_future()

        def settle(how):
            if not done.done():
                done.set_result(how)
        on_resumed = lambda _: settle("resumed")
        on_started = lambda _: settle("started")
        agent.add_event_handler("session_resumed", on_resumed)
        agent.add_event_handler("session_start", on_started)
        try:
            agent.connect(agent.args.host, agent.args.port)
            how = await asyncio.wait_for(done, cmd.get("timeout", 20))
            return {"ok": True, "how": how}
        except asyncio.TimeoutError:
            return {"ok": False, "error": "timeout"}
        finally:
            agent.del_event_handler("session_resumed", on_resumed)
            agent.del_event_handler("session_start", on_started)
    if c == "sm_state":
        # Whether the server enabled stream management with resumption, and our counters.
        sm = agent.plugin["xep_0198"]
        for _ in range(int(cmd.get("timeout", 10) * 50)):
            if sm.sm_id or not cmd.get("wait", True):
                break
            await asyncio.sleep(0.02)
        return {"ok": sm.sm_id is not None, "id": sm.sm_id, "handled": sm.handled,
                "unacked": len(sm.unacked_queue)}
    if c == "paced_messages":
        # `count` chat messages to `to`, one every `interval_ms`: a person typing very fast, so
        # that the test's link cuts land in the middle of the conversation.
        for i in range(cmd["count"]):
            agent.send_message(mto=cmd["to"], mbody=f"{cmd.get('prefix', 'm')}-{i}", mtype="chat")
            await asyncio.sleep(cmd.get("interval_ms", 5) / 1000)
        await agent.plugin["xep_0199"].ping(jid=agent.boundjid.domain, timeout=10)
        return {"ok": True, "sent": cmd["count"]}
    if c == "wait_disconnected":
        # The link was cut from outside; wait until slixmpp noticed.
        for _ in range(int(cmd.get("timeout", 10) * 50)):
            if agent.transport is None:
                return {"ok": True}
            await asyncio.sleep(0.02)
        return {"ok": False, "error": "still connected"}
    if c == "upload_slot":
        # XEP-0363: ask the server for a slot; the reply has the PUT and GET URLs, or the error.
        ns = "urn:xmpp:http:upload:0"
        iq = agent.make_iq_get(ito=cmd.get("to", agent.boundjid.domain))
        iq.xml.append(ET.Element(f"{{{ns}}}request", {
            "filename": cmd["filename"], "size": str(cmd["size"]),
            "content-type": cmd.get("content_type", "application/octet-stream")}))
        try:
            res = await iq.send(timeout=15)
        except IqError as e:
            err = e.iq["error"]
            return {"ok": False, "condition": err["condition"], "text": err["text"],
                    "xml": str(e.iq)}
        slot = res.xml.find(f"{{{ns}}}slot")
        return {"ok": True, "put": slot.find(f"{{{ns}}}put").get("url"),
                "get": slot.find(f"{{{ns}}}get").get("url")}
    if c == "http":
        # One HTTPS request, as a client's HTTP stack makes it after the slot: the body streams
        # from a file (or is `body` text); the answer's body streams to `save_to` or comes back
        # as text, with its SHA-256 either way. The URL's host is reached at --host (loopback).
        result = await asyncio.get_running_loop().run_in_executor(None, http_request, agent.args, cmd)
        return {"ok": True, **result}
    if c == "watch_errors":
        # Error messages without a body (as other servers send them) as "message_error" events.
        def on_error(msg):
            emit({"event": "message_error", "from": str(msg["from"]), "to": str(msg["to"]),
                  "condition": msg["error"]["condition"], "text": msg["error"]["text"]})
        agent.add_event_handler("message_error", on_error)
        return {"ok": True}
    if c in ("push_enable", "push_disable"):
        # XEP-0357 §5/§7 (slixmpp has no plugin): enable push with an app server's JID and node,
        # with a publish-options form carrying `options`; disable one node, or all without one.
        iq = agent.make_iq_set()
        el = ET.Element("{urn:xmpp:push:0}" + c.split("_")[1], jid=cmd["jid"])
        if cmd.get("node"):
            el.set("node", cmd["node"])
        if cmd.get("options"):
            x = ET.SubElement(el, "{jabber:x:data}x", type="submit")
            fields = {"FORM_TYPE": "http://jabber.org/protocol/pubsub#publish-options", **cmd["options"]}
            for var, value in fields.items():
                f = ET.SubElement(x, "{jabber:x:data}field", var=var)
                ET.SubElement(f, "{jabber:x:data}value").text = value
        iq.xml.append(el)
        try:
            await iq.send(timeout=10)
            return {"ok": True}
        except IqError as e:
            return {"ok": False, "condition": e.iq["error"]["condition"]}
        except IqTimeout:
            return {"ok": False, "condition": "timeout"}
    if c == "push_app_server":
        # Play a XEP-0357 app server: report each pubsub publish (node, summary form, publish-
        # options) and answer it with a result, or with the error given as {"type", "condition"}.
        agent.push_error = cmd.get("error")
        if not getattr(agent, "push_handler", False):
            agent.push_handler = True
            X = "{jabber:x:data}"

            def form_values(x):
                if x is None:
                    return None
                return {f.get("var"): (f.findtext(X + "value") or "") for f in x.findall(X + "field")}

            def on_publish(iq):
                if iq["type"] != "set":
                    return
                ps = "{http://jabber.org/protocol/pubsub}"
                pubsub = iq.xml.find(ps + "pubsub")
                publish = pubsub.find(ps + "publish")
                note = publish.find(ps + "item/{urn:xmpp:push:0}notification") if publish is not None else None
                options = pubsub.find(ps + "publish-options")
                emit({"event": "push", "from": str(iq["from"]),
                      "node": publish.get("node") if publish is not None else None,
                      "fields": form_values(note.find(X + "x") if note is not None else None),
                      "options": form_values(options.find(X + "x") if options is not None else None)})
                err = agent.push_error
                reply = (f"<iq type='{'error' if err else 'result'}' to={quoteattr(str(iq['from']))}"
                         f" id={quoteattr(iq['id'])}>")
                if err:
                    reply += (f"<error type={quoteattr(err['type'])}><{err['condition']}"
                              " xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>")
                agent.send_raw(reply + "</iq>")
            agent.register_handler(Callback("push-publish", MatchXPath(
                "{jabber:client}iq/{http://jabber.org/protocol/pubsub}pubsub"), on_publish))
        return {"ok": True}
    if c == "avatar_setup":
        # XEP-0084 through slixmpp's own plugin, and what each presence says in
        # vcard-temp:x:update (XEP-0153), so a test sees the hash the server put there. Before
        # connect: the plugin adds disco features at binding, and pep_setup afterwards makes the
        # caps hash cover them (the server checks the hash).
        for name in ("xep_0004", "xep_0060", "xep_0163", "xep_0084"):
            agent.register_plugin(name)

        def on_update(pres):
            photo = pres.xml.find("{vcard-temp:x:update}x/{vcard-temp:x:update}photo")
            emit({"event": "avatar_presence", "from": str(pres["from"]), "type": pres["type"],
                  "photo": None if photo is None else (photo.text or "")})
        agent.add_event_handler("presence", on_update)
        return {"ok": True}
    if c in ("avatar_publish", "avatar_stop"):
        # XEP-0084 §4 as clients do it: the data item first, then the metadata naming it (or an
        # empty metadata item to stop showing an avatar).
        import base64
        plugin = agent.plugin["xep_0084"]
        try:
            if c == "avatar_stop":
                await plugin.stop(timeout=10)
                return {"ok": True}
            data = base64.b64decode(cmd["data"])
            await plugin.publish_avatar(data, timeout=10)
            info = {"id": plugin.generate_id(data), "type": cmd["type"], "bytes": len(data)}
            await plugin.publish_avatar_metadata([info], timeout=10)
            return {"ok": True, "id": info["id"]}
        except IqError as e:
            return pubsub_error(e)
        except IqTimeout:
            return {"ok": False, "condition": "timeout"}
    if c in ("vcard_set", "vcard_get"):
        # XEP-0054 through slixmpp's plugin; the photo travels base64 in the JSON.
        import base64
        import hashlib
        plugin = agent.plugin["xep_0054"]
        try:
            if c == "vcard_set":
                v = plugin.make_vcard()
                if cmd.get("photo"):
                    v["PHOTO"]["TYPE"] = cmd["type"]
                    v["PHOTO"]["BINVAL"] = base64.b64decode(cmd["photo"])
                await plugin.publish_vcard(v, timeout=10)
                return {"ok": True}
            iq = await plugin.get_vcard(slixmpp.JID(cmd["to"]), local=False, timeout=10)
            ns = "{vcard-temp}"
            photo = iq.xml.find(f"{ns}vCard/{ns}PHOTO")
            if photo is None or photo.find(f"{ns}BINVAL") is None:
                return {"ok": True, "photo": None}
            raw = base64.b64decode("".join(photo.find(f"{ns}BINVAL").text.split()))
            kind = photo.find(f"{ns}TYPE")
            return {"ok": True, "photo": base64.b64encode(raw).decode(), "sha1": hashlib.sha1(raw).hexdigest(),
                    "type": kind.text if kind is not None else None}
        except IqError as e:
            return {"ok": False, "condition": e.iq["error"]["condition"], "text": e.iq["error"]["text"]}
        except IqTimeout:
            return {"ok": False, "condition": "timeout"}
    if c in ("pep_subscribe", "pep_unsubscribe", "pep_subscriptions", "pep_node_subscriptions"):
        # XEP-0060 §6.1, §6.2, §5.6 and (owner) §8.8.1 through slixmpp's xep_0060.
        plugin = agent.plugin["xep_0060"]
        try:
            if c == "pep_subscribe":
                res = await plugin.subscribe(cmd["to"], cmd["node"], timeout=10)
                return {"ok": True, "subscription": res.xml.find(
                    "{http://jabber.org/protocol/pubsub}pubsub/{http://jabber.org/protocol/pubsub}subscription"
                ).get("subscription")}
            if c == "pep_unsubscribe":
                await plugin.unsubscribe(cmd["to"], cmd["node"], timeout=10)
                return {"ok": True}
            if c == "pep_subscriptions":
                res, ns = await plugin.get_subscriptions(cmd["to"], timeout=10), "http://jabber.org/protocol/pubsub"
            else:
                res = await plugin.get_node_subscriptions(cmd["to"], cmd["node"], timeout=10)
                ns = "http://jabber.org/protocol/pubsub#owner"
            subs = [{"node": e.get("node"), "jid": e.get("jid"), "subscription": e.get("subscription")}
                    for e in res.xml.iter("{%s}subscription" % ns)]
            return {"ok": True, "subscriptions": subs}
        except IqError as e:
            return pubsub_error(e)
        except IqTimeout:
            return {"ok": False, "condition": "timeout"}
    if c.startswith("muc_"):
        result = await muc_command(agent, c, cmd)
        if result is not None:
            return result
    if c == "external_services":
        # XEP-0215 (slixmpp has no plugin for it): `what` is "services" (optionally of one `type`) or
        # "credentials" for `services`, a list of attribute dicts; the answer's <service/> attributes.
        ns = "urn:xmpp:extdisco:2"
        iq = agent.make_iq_get(ito=cmd.get("to", agent.boundjid.domain))
        query = ET.SubElement(iq.xml, f"{{{ns}}}{cmd.get('what', 'services')}")
        if cmd.get("type"):
            query.set("type", cmd["type"])
        for attrs in cmd.get("services", []):
            ET.SubElement(query, f"{{{ns}}}service", {k: str(v) for k, v in attrs.items()})
        try:
            reply = await iq.send(timeout=10)
        except IqError as e:
            return {"ok": False, "error": str(e), "condition": e.iq["error"]["condition"]}
        except IqTimeout as e:
            return {"ok": False, "error": str(e), "condition": "timeout"}
        answer = reply.xml.find(f"{{{ns}}}{cmd.get('what', 'services')}")
        if answer is None:
            return {"ok": False, "error": "no answer element"}
        return {"ok": True, "services": [dict(s.attrib) for s in answer.findall(f"{{{ns}}}service")]}
    return {"ok": False, "error": f"unknown command {c}"}


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--jid", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ca-file", required=True)
    p.add_argument("--direct-tls", action="store_true")
    p.add_argument("--tls13-only", action="store_true")
    p.add_argument("--mechanism")
    p.add_argument("--register", action="store_true", help="register the account in-band first")
    p.add_argument("--token", help="XEP-0401 preauth token for --register")
    p.add_argument("--debug", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.ERROR, stream=sys.stderr)
    agent = Agent(args)
    loop = asyncio.get_event_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    emit({"event": "ready"})
    while True:
        line = await reader.readline()
        if not line:
            break
        cmd = json.loads(line)
        try:
            result = await run_command(agent, cmd)
        except Exception as e:  # report, don't die: the test wants to see it
            result = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        emit({"reply": cmd.get("id"), **result})


if __name__ == "__main__":
    asyncio.run(main())
