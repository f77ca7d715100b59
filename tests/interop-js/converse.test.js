// converse.js 14 (npm) in Chromium, driven by puppeteer-core: a browser
// client logs in over WebSocket (RFC 7395) and, separately, over BOSH
// (XEP-0124 / XEP-0206), exchanges messages both ways with an xmpp.js client
// on TCP, then reloads the page and logs in again.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import { join, dirname, extname, normalize } from "node:path";
import { fileURLToPath } from "node:url";
import { xml } from "@xmpp/client";
import { Server, STEP } from "./harness.js";

process.env.NODE_TLS_REJECT_UNAUTHORIZED = "0";
const dist = join(dirname(fileURLToPath(import.meta.url)), "node_modules/converse.js/dist");
const chromium = process.env.CHROMIUM ?? "/usr/bin/chromium";
const noBrowser = !existsSync(chromium) && `no Chromium at ${chromium} (apt-get install chromium)`;

let server, pages, browser, bob, bobJid;
const within = (promise, what) => server.within(promise, what);

/**
 * The page: converse.js with a plugin that hands its API to the test and
 * records the bodies of the messages it receives.
 */
function page(transport, httpPort) {
  const endpoint =
    transport === "ws"
      ? `websocket_url: "ws://127.0.0.1:${httpPort}/xmpp-websocket"`
      : `bosh_service_url: "http://127.0.0.1:${httpPort}/http-bind"`;
  return `<!doctype html><html><head><meta charset="utf-8">
<script type="module" src="/dist/converse.min.js"></script></head><body>
<script type="module">
window.received = [];
converse.plugins.add("starling-test", {
  initialize() {
    const api = this._converse.api;
    api.listen.on("message", ({ stanza }) => {
      const body = stanza.querySelector("body");
      if (body) window.received.push(body.textContent);
    });
    // Fired once the session is bound or resumed (and again on reconnection).
    api.listen.on("connected", () => (window.online = api.connection.get().jid));
    api.listen.on("reconnected", () => (window.online = api.connection.get().jid));
    window.api = api;
  },
});
converse.initialize({
  ${endpoint},
  discover_connection_methods: false,
  whitelisted_plugins: ["starling-test"],
  auto_reconnect: false,
  // converse.js 14 resumes its XEP-0198 session after a reload but then
  // sends from a new resource, which the server refuses (RFC 6120
  // §4.9.3.9 invalid-from): a fresh login each time instead.
  enable_smacks: false,
  persistent_store: "sessionStorage",
  loglevel: "debug",
});
</script></body></html>`;
}

/** Serves the page at /ws.html and /bosh.html, converse.js's dist at /dist/. */
function pageServer(httpPort) {
  const types = { ".js": "text/javascript", ".css": "text/css", ".json": "application/json", ".wasm": "application/wasm" };
  const srv = createServer(async (req, res) => {
    const { pathname } = new URL(req.url, "http://localhost");
    const transport = { "/ws.html": "ws", "/bosh.html": "bosh" }[pathname];
    if (transport) {
      res.writeHead(200, { "content-type": "text/html" });
      return res.end(page(transport, httpPort));
    }
    const file = join(dist, normalize(pathname.replace(/^\/dist\//, "")));
    if (!pathname.startsWith("/dist/") || !file.startsWith(dist) || !existsSync(file)) {
      res.writeHead(404);
      return res.end();
    }
    res.writeHead(200, { "content-type": types[extname(file)] ?? "application/octet-stream" });
    res.end(await readFile(file));
  });
  return new Promise((ok) => srv.listen(0, "127.0.0.1", () => ok(srv)));
}

before(async () => {
  server = new Server();
  await server.start();
  server.addUser("alice", "alice-secret");
  server.addUser("bob", "bob-secret");
  if (noBrowser) return;
  pages = await pageServer(server.httpPort);
  const { default: puppeteer } = await import("puppeteer-core");
  browser = await puppeteer.launch({
    executablePath: chromium,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
  bob = server.client({ username: "bob", password: "bob-secret", resource: "tcp" });
  // XEP-0386: the server picks the full JID; use the one it bound.
  bobJid = (await within(bob.start(), "bob online")).toString();
});

// Everything is closed whatever failed, so that the run ends.
after(async () => {
  await bob?.stop().catch(() => {});
  await browser?.close();
  if (pages) {
    pages.closeAllConnections();
    await new Promise((ok) => pages.close(ok));
  }
  const code = await server.stop();
  assert.equal(code, 0, "starling exits 0 on SIGTERM");
  assert.ok(!server.logText().includes("panicked"), "no panic logged");
  server.cleanup();
});

/** Waits until converse.js is online; resolves with its full JID. */
async function online(tab) {
  await tab.waitForFunction(() => window.online, { timeout: STEP });
  return tab.evaluate(() => window.online);
}

/** A message each way between the browser (`jid`) and bob on TCP. */
async function chat(tab, jid, word) {
  const text = `from the browser: ${word}`;
  await tab.evaluate(
    (to, text) => {
      const { $msg } = window.converse.env;
      window.api.send($msg({ to, type: "chat" }).c("body").t(text));
    },
    bobJid,
    text,
  );
  const got = await bob.nextMessage();
  assert.equal(got.getChildText("body"), text);
  assert.equal(got.attrs.from, jid, "RFC 6120 §8.1.2.1: stamped with the browser session's full JID");
  const reply = `to the browser: ${word}`;
  await bob.send(xml("message", { to: jid, type: "chat" }, xml("body", {}, reply)));
  await tab.waitForFunction((reply) => window.received.includes(reply), { timeout: STEP }, reply);
}

for (const [transport, name] of [
  ["ws", "WebSocket (RFC 7395)"],
  ["bosh", "BOSH (XEP-0206)"],
]) {
  test(`converse.js over ${name}: log in, chat with a TCP client, reload, log in again`, { skip: noBrowser }, async () => {
    const tab = await browser.newPage();
    const consoleLines = [];
    tab.on("console", (m) => consoleLines.push(m.text().slice(0, 500)));
    try {
      await tab.goto(`http://127.0.0.1:${pages.address().port}/${transport}.html`);
      await tab.waitForFunction(() => window.api, { timeout: STEP });
      await tab.evaluate(() => window.api.user.login("alice@localhost/web", "alice-secret"));
      const jid = await online(tab);
      assert.equal(jid, "alice@localhost/web");
      await chat(tab, jid, `${transport} first`);
      // converse.js keeps its login in sessionStorage: after a reload it
      // logs in again by itself (WebSocket: SASL with the stored SCRAM
      // keys; BOSH: it takes the same session up again, XEP-0124 §14
      // request ids carrying on).
      await tab.reload();
      const again = await online(tab);
      assert.match(again, /^alice@localhost\/.+/);
      await chat(tab, again, `${transport} after reload`);
    } catch (e) {
      e.message += `\n--- browser console ---\n${consoleLines.slice(-60).join("\n")}`;
      throw e;
    } finally {
      await tab.close();
    }
  });
}
