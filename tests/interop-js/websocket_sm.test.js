// xmpp.js (@xmpp/client 0.14) over WebSocket (RFC 7395) with stream
// management (XEP-0198), enabled inline at Bind 2 (XEP-0198 §7): messages
// flow with a TCP client; then the socket is broken without <close/>, a
// message comes in meanwhile, and the client resumes the session inline at
// SASL2 and gets that message, once.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { once } from "node:events";
import { xml } from "@xmpp/client";
import { WebSocket } from "ws";
import { Server } from "./harness.js";

// @xmpp/websocket uses the WHATWG WebSocket, global from Node.js 22 on.
globalThis.WebSocket ??= WebSocket;
process.env.NODE_TLS_REJECT_UNAUTHORIZED = "0";

let server;
const within = (promise, what) => server.within(promise, what);

before(async () => {
  server = new Server();
  await server.start();
  server.addUser("alice", "alice-secret");
  server.addUser("bob", "bob-secret");
});

after(async () => {
  const code = await server.stop();
  assert.equal(code, 0, "starling exits 0 on SIGTERM");
  assert.ok(!server.logText().includes("panicked"), "no panic logged");
  server.cleanup();
});

const chat = (to, body) => xml("message", { to, type: "chat" }, xml("body", {}, body));

test("stream management over WebSocket: acks, a broken socket, resumption", async (t) => {
  const bob = server.client({ username: "bob", password: "bob-secret", resource: "desk" });
  const alice = server.client({
    service: `ws://127.0.0.1:${server.httpPort}/xmpp-websocket`,
    username: "alice",
    password: "alice-secret",
    resource: "web",
  });
  // Offline whatever happens, so that the run ends.
  t.after(() => Promise.all([alice.stop(), bob.stop()]).catch(() => {}));
  const bobJid = (await within(bob.start(), "bob online")).toString();
  // The test reconnects by itself, when the message is on its way.
  alice.reconnect.stop();
  const sm = alice.streamManagement;
  const aliceJid = (await within(alice.start(), "alice online over WebSocket")).toString();
  assert.ok(sm.enabled && sm.id, "XEP-0198 §3: enabled, resumable");

  // XEP-0198 §4: the server acknowledges what alice sent.
  const acked = once(sm, "ack");
  await alice.send(chat(bobJid, "over the socket"));
  assert.equal((await bob.nextMessage()).getChildText("body"), "over the socket");
  await bob.send(chat(aliceJid, "to the socket"));
  assert.equal((await alice.nextMessage()).getChildText("body"), "to the socket");
  const [ackedStanza] = await within(acked, "the server's <a/>");
  assert.equal(ackedStanza.getChildText("body"), "over the socket");

  // XEP-0198 §5: the connection is lost, not closed; the session waits.
  const lost = once(alice, "disconnect");
  alice.socket.socket.terminate();
  await within(lost, "alice disconnected");
  await bob.send(chat(aliceJid, "while away"));
  await within(bob.iqCaller.get(xml("ping", "urn:xmpp:ping"), "localhost"), "bob's ping");

  const resumed = once(sm, "resumed");
  await within(alice.reconnect.reconnect(), "alice reconnects");
  await within(resumed, "XEP-0198 §5: <resumed/>");
  assert.equal(alice.jid.toString(), aliceJid, "the same session, the same full JID");
  assert.equal((await alice.nextMessage()).getChildText("body"), "while away");
  await alice.send(chat(bobJid, "back"));
  assert.equal((await bob.nextMessage()).getChildText("body"), "back");
  // A barrier: the ping's answer comes after anything queued before it;
  // nothing was delivered twice.
  await within(alice.iqCaller.get(xml("ping", "urn:xmpp:ping"), "localhost"), "alice's ping");
  assert.equal(alice.pendingMessages(), 0, "no message repeated");
});
