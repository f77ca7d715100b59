// converse.js 14 in Chromium (browser.js) reading history from the server
// rather than from its own cache: each login is in a fresh browser context,
// so whatever converse.js shows of earlier conversations came from the
// server. One-to-one: the account's archive (XEP-0313), with what came in
// while the page was closed. Group chat: a room made by an xmpp.js client
// on TCP (XEP-0045), its history read from the room's archive (XEP-0313
// §3.3.2) on join, then a message from the browser to the room.

import { test } from "node:test";
import assert from "node:assert/strict";
import { setTimeout as delay } from "node:timers/promises";
import { xml } from "@xmpp/client";
import { STEP } from "./harness.js";
import { converseSuite, noBrowser, login, chat } from "./browser.js";

process.env.NODE_TLS_REJECT_UNAUTHORIZED = "0";

const suite = converseSuite();
const ALICE = "alice@localhost/web";
const BOB = "bob@localhost";
const ROOM = "history@conference.localhost";

const ping = (to, id) => xml("iq", { type: "get", to, id }, xml("ping", { xmlns: "urn:xmpp:ping" }));

/**
 * Resolves with the next stanza `peer` receives for which `test` holds, or
 * with null after `ms` (if given).
 */
function nextStanza(peer, test, ms) {
  return new Promise((ok) => {
    let timer;
    const done = (stanza) => {
      clearTimeout(timer);
      peer.off("stanza", on);
      ok(stanza);
    };
    const on = (stanza) => test(stanza) && done(stanza);
    peer.on("stanza", on);
    if (ms) timer = setTimeout(() => done(null), ms);
  });
}

/**
 * Resolves once the server answers a ping (XEP-0199) to `jid` (a full JID)
 * with service-unavailable: its session is gone (RFC 6121 §8.5.3.2.3), so
 * that messages sent to the account from then on find it offline.
 */
async function gone(peer, jid) {
  // Not iqCaller.request(): @xmpp/iq 0.14 leaves an error answer that
  // comes before its send() resolved as an unhandled rejection.
  const poll = async () => {
    for (let n = 0; ; n++) {
      const id = `gone-${n}`;
      // A ping that reached the closing page gets no answer at all: after
      // a second without one, ask again.
      const answer = nextStanza(peer, (s) => s.is("iq") && s.attrs.id === id, 1000);
      await peer.send(ping(jid, id));
      const iq = await answer;
      const error = iq?.attrs.type === "error" ? iq.getChild("error") : undefined;
      if (error?.getChild("service-unavailable")) return;
      // The server bounces what it had routed to the closing session.
      if (error && !error.getChild("recipient-unavailable")) assert.fail(`an offline full JID: ${iq}`);
      if (iq) await delay(50); // between round trips while the server closes the session
    }
  };
  await suite.within(poll(), `${jid} offline`);
}

/**
 * What converse.js holds for the chat (kind "chats") or room ("rooms")
 * `jid` once every body of `bodies` is among its messages: for each of
 * those, { body, sender ("me" or "them"), nick, archived (it came in a
 * XEP-0313 result), count (how many messages have that body) }, and the
 * texts rendered in the chat's view.
 */
async function shown(tab, kind, jid, bodies) {
  const held = async (kind, jid, bodies) => {
    const chat = await window.api[kind].get(jid);
    const messages = chat?.messages.models ?? [];
    if (!bodies.every((b) => messages.some((m) => m.get("body") === b))) return false;
    return bodies.map((body) => {
      const same = messages.filter((m) => m.get("body") === body);
      const m = same[0];
      return { body, sender: m.get("sender"), nick: m.get("nick"), archived: !!m.get("is_archived"), count: same.length };
    });
  };
  // The view renders after the model changed: wait for the texts too.
  const rendered = (jid, bodies) => {
    const view = document.querySelector(`converse-chat[jid="${jid}"], converse-muc[jid="${jid}"]`);
    const texts = [...(view?.querySelectorAll(".chat-msg__text") ?? [])].map((e) => e.textContent.trim());
    return bodies.every((b) => texts.includes(b)) && texts;
  };
  try {
    await tab.waitForFunction(held, { timeout: STEP, polling: 100 }, kind, jid, bodies);
    const messages = await tab.evaluate(held, kind, jid, bodies);
    const texts = await (await tab.waitForFunction(rendered, { timeout: STEP, polling: 100 }, jid, bodies)).jsonValue();
    return { messages, texts };
  } catch (e) {
    // What there is instead.
    const state = await tab.evaluate(
      async (kind, jid) => {
        const chat = await window.api[kind].get(jid);
        const view = document.querySelector(`converse-chat[jid="${jid}"], converse-muc[jid="${jid}"]`);
        return {
          model: chat?.messages.models.map((m) => [m.get("body"), m.get("sender"), !!m.get("is_archived")]),
          hidden: chat?.get("hidden"),
          view: view && [...view.querySelectorAll(".chat-msg__text")].map((e) => e.textContent.trim()),
        };
      },
      kind,
      jid,
    );
    e.message += `\nwanted ${JSON.stringify(bodies)}; converse.js has ${JSON.stringify(state)}`;
    throw e;
  }
}

/**
 * alice logs in to converse.js in a fresh browser context, exchanges one
 * message each way with bob per text, and closes the page; resolves with
 * the bodies in the order they were exchanged, once her session is gone.
 */
async function exchangeThenClose(web, bob, texts) {
  const exchanged = await web.withTab(
    async (tab) => {
      const jid = await login(tab, ALICE, "alice-secret");
      const bodies = [];
      for (const text of texts) {
        const { sent, received } = await chat(tab, jid, bob, text);
        bodies.push(sent, received);
      }
      return bodies;
    },
    { fresh: true },
  );
  await gone(bob, ALICE);
  return exchanged;
}

/** Opens the chat with `jid` in converse.js, as a click on the contact would. */
const openChat = (tab, jid) => tab.evaluate((jid) => window.api.chats.open(jid).then(() => {}), jid);

test(
  "XEP-0313 §4, §4.3.3: after a fresh login converse.js shows the conversation from the server's archive",
  { skip: noBrowser },
  async () => {
    const { web, bob } = suite;
    const exchanged = await exchangeThenClose(web, bob, ["archived one", "archived two"]);
    // A new browser context: no sessionStorage, no IndexedDB, no cache of
    // the conversation. Opening the chat makes converse.js ask the
    // archive for its last page with bob (§4.1.1 filtering by JID, §4.3.3).
    await web.withTab(
      async (tab) => {
        await login(tab, ALICE, "alice-secret");
        await openChat(tab, BOB);
        const { messages, texts } = await shown(tab, "chats", BOB, exchanged);
        for (const [i, m] of messages.entries()) {
          assert.equal(m.count, 1, `"${m.body}" shown once`);
          assert.ok(m.archived, `"${m.body}" came from the archive (a XEP-0313 <result/>)`);
          assert.equal(m.sender, i % 2 === 0 ? "me" : "them", `"${m.body}": alice's own messages are archived too`);
        }
        // In the order they were exchanged (§3.1).
        assert.deepEqual(
          texts.filter((t) => exchanged.includes(t)),
          exchanged,
        );
      },
      { fresh: true },
    );
  },
);

test(
  "XEP-0313 §6.3, XEP-0160: messages sent while converse.js's page was closed are there at the next login, with what came before",
  { skip: noBrowser },
  async () => {
    const { web, bob } = suite;
    const before = await exchangeThenClose(web, bob, ["before closing"]);
    // One message: converse.js 14 handles the offline messages it gets at
    // login concurrently, and for a chat it does not have yet, each one
    // may make a ChatBox of its own (api.chats.get() looks, awaits, then
    // creates): the messages of all but one of those never show.
    const away = ["while you were away"];
    for (const body of away) await bob.send(xml("message", { to: "alice@localhost", type: "chat" }, xml("body", {}, body)));
    // A round trip on bob's stream after the message: the server has
    // taken it (archived, stored offline) before alice logs in again.
    await suite.within(bob.iqCaller.request(ping("localhost", "after-away")), "ping");
    await web.withTab(
      async (tab) => {
        await login(tab, ALICE, "alice-secret");
        // Offline delivery (XEP-0160) at her initial presence; converse.js
        // made the chat for it (so opening it now makes no second one).
        await tab.waitForFunction((away) => away.every((b) => window.received.includes(b)), { timeout: STEP }, away);
        await openChat(tab, BOB);
        const { messages, texts } = await shown(tab, "chats", BOB, [...before, ...away]);
        for (const m of messages) assert.equal(m.count, 1, `"${m.body}" shown once`);
        assert.ok(messages[0].archived && messages[1].archived, "what came before the page closed came from the archive");
        assert.deepEqual(
          messages.map((m) => m.sender),
          ["me", "them", "them"],
        );
        assert.deepEqual(
          texts.filter((t) => before.includes(t) || away.includes(t)),
          [...before, ...away],
          "in order",
        );
      },
      { fresh: true },
    );
  },
);

test(
  "XEP-0045 §7.2, §7.2.13, §7.4 with XEP-0313 §3.3.2: converse.js joins a TCP client's room, shows its history, talks in it",
  { skip: noBrowser },
  async () => {
    const { server, web } = suite;
    // Bob in the room from a session of his own: groupchat messages go to
    // this one, not to the "tcp" session the other scenarios read.
    const bob = server.client({ username: "bob", password: "bob-secret", resource: "muc" });
    await suite.within(bob.start(), "bob online for the room");
    try {
      // §10.1.2: the join creates the room (status 201); the owner accepts
      // the default configuration (an instant room).
      const self = nextStanza(bob, (s) => s.is("presence") && s.attrs.from === `${ROOM}/bob`);
      await bob.send(xml("presence", { to: `${ROOM}/bob` }, xml("x", { xmlns: "http://jabber.org/protocol/muc" })));
      const presence = await suite.within(self, "bob's own presence in the room");
      assert.notEqual(presence.attrs.type, "error", presence.toString());
      const codes = presence
        .getChild("x", "http://jabber.org/protocol/muc#user")
        .getChildren("status")
        .map((s) => s.attrs.code);
      assert.ok(codes.includes("110"), "§7.2.2: self-presence (110)");
      if (codes.includes("201")) {
        await suite.within(
          bob.iqCaller.request(
            xml(
              "iq",
              { type: "set", to: ROOM },
              xml(
                "query",
                { xmlns: "http://jabber.org/protocol/muc#owner" },
                xml("x", { xmlns: "jabber:x:data", type: "submit" }),
              ),
            ),
          ),
          "instant room",
        );
      }
      // §7.4: each message comes back to its sender, stamped with the
      // room's stanza id (XEP-0359): it is in the room's archive.
      const said = ["room history: one", "room history: two", "room history: three"];
      for (const body of said) {
        await bob.send(xml("message", { to: ROOM, type: "groupchat" }, xml("body", {}, body)));
        const echo = await bob.nextMessage();
        assert.equal(echo.getChildText("body"), body);
        assert.equal(echo.attrs.from, `${ROOM}/bob`);
        assert.ok(
          echo.getChildren("stanza-id", "urn:xmpp:sid:0").some((s) => s.attrs.by === ROOM),
          `reflection carries the room's stanza id: ${echo}`,
        );
      }

      await web.withTab(
        async (tab) => {
          await login(tab, ALICE, "alice-secret");
          await tab.evaluate((room) => window.api.rooms.open(room, { nick: "alice" }).then(() => {}), ROOM);
          // converse.js asks for no §7.2.13 history (maxstanzas="0") from a
          // room that advertises urn:xmpp:mam:2 and reads the room's archive
          // instead: the history it shows must be archived messages.
          const { messages } = await shown(tab, "rooms", ROOM, said);
          for (const m of messages) {
            assert.equal(m.count, 1, `"${m.body}" shown once`);
            assert.equal(m.nick, "bob", `"${m.body}" is bob's`);
            assert.ok(m.archived, `"${m.body}" came from the room's archive`);
          }
          const text = "hello from converse.js";
          await tab.evaluate(
            async (room, body) => (await window.api.rooms.get(room)).sendMessage({ body }).then(() => {}),
            ROOM,
            text,
          );
          const got = await bob.nextMessage();
          assert.equal(got.getChildText("body"), text);
          assert.equal(got.attrs.type, "groupchat");
          assert.equal(got.attrs.from, `${ROOM}/alice`, "§7.4: from the sender's occupant JID");
          // Her own copy came back too (§7.4): converse.js matched it to
          // the message it sent, now with the room's stanza id.
          await tab.waitForFunction(
            async (room, body) =>
              (await window.api.rooms.get(room)).messages.models.some(
                (m) => m.get("body") === body && m.get(`stanza_id ${room}`),
              ),
            { timeout: STEP, polling: 100 },
            ROOM,
            text,
          );
        },
        { fresh: true },
      );
    } finally {
      await bob.stop().catch(() => {});
    }
  },
);
