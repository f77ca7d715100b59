// xmpp.js (@xmpp/client 0.14) logs in with SASL2 (XEP-0388) and Bind 2
// (XEP-0386), receives a FAST token (XEP-0484 §4.2), then logs in again with
// only that token (HT-SHA-256-NONE, §4.3); messages flow with a second client.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { xml } from "@xmpp/client";
import { Server } from "./harness.js";

// The test server's certificate is self-signed, made at its first start.
process.env.NODE_TLS_REJECT_UNAUTHORIZED = "0";

let server;

before(async () => {
  server = new Server();
  await server.start();
  server.addUser("alice", "alice-secret");
  server.addUser("bob", "bob-secret");
});

after(async (t) => {
  const code = await server.stop();
  assert.equal(code, 0, "starling exits 0 on SIGTERM");
  assert.ok(!server.logText().includes("panicked"), "no panic logged");
  server.cleanup();
});

const within = (promise, what) => server.within(promise, what);
const connect = (options) => server.client(options);

test("SASL2 + Bind 2 login issues a FAST token; the token alone logs in again", async () => {
  const userAgent = xml("user-agent", { id: "2f8b4e6a-0d33-4a5c-9f61-7d8c1e2b3a40" }, xml("software", {}, "xmpp.js test"));
  let saved = null;
  const alice = connect({ username: "alice", password: "alice-secret", userAgent, resource: "js" });
  alice.fast.saveToken = async (token) => {
    saved = token;
  };
  alice.fast.fetchToken = async () => saved;
  const usedSasl2 = [];
  alice.on("nonza", (el) => usedSasl2.push(el.getNS()));
  const aliceJid = await within(alice.start(), "alice online");
  assert.ok(usedSasl2.includes("urn:xmpp:sasl:2"), `SASL2 was used: ${usedSasl2}`);
  assert.ok(saved?.token, "XEP-0484 §4.2: a token was issued");
  assert.equal(saved.mechanism, "HT-SHA-256-NONE");
  assert.match(aliceJid.toString(), /^alice@localhost\/js\./, "XEP-0386: the resource carries the tag");

  const bob = connect({ username: "bob", password: "bob-secret", resource: "desk" });
  const bobJid = await within(bob.start(), "bob online");
  await alice.send(xml("message", { to: bobJid.toString(), type: "chat" }, xml("body", {}, "hello over SASL2")));
  const got = await bob.nextMessage();
  assert.equal(got.getChildText("body"), "hello over SASL2");
  assert.equal(got.attrs.from, aliceJid.toString());
  await within(alice.stop(), "alice offline");

  // A wrong password: only the token can log this client in.
  const again = connect({ username: "alice", password: "not-the-password", userAgent, resource: "js" });
  again.fast.fetchToken = async () => saved;
  again.fast.saveToken = async (token) => {
    saved = token;
  };
  const againJid = await within(again.start(), "alice online with FAST");
  assert.equal(againJid.toString(), aliceJid.toString(), "XEP-0386 §3.2: the same installation, the same resource");
  await bob.send(xml("message", { to: againJid.toString(), type: "chat" }, xml("body", {}, "welcome back")));
  assert.equal((await again.nextMessage()).getChildText("body"), "welcome back");
  await within(again.stop(), "alice offline");
  await within(bob.stop(), "bob offline");
});
