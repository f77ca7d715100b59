// converse.js 14 (npm) in Chromium, driven by puppeteer-core, against a
// Server of harness.js: the page, the HTTP server that serves it with
// converse.js's dist, the browser, and the steps the converse*.test.js
// scenarios share (log in, chat with an xmpp.js client).

import { before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import { join, dirname, extname, normalize } from "node:path";
import { fileURLToPath } from "node:url";
import { xml } from "@xmpp/client";
import { Server, STEP } from "./harness.js";

const dist = join(dirname(fileURLToPath(import.meta.url)), "node_modules/converse.js/dist");
const chromium = process.env.CHROMIUM ?? "/usr/bin/chromium";
/** Why the browser scenarios are skipped, or false. */
export const noBrowser = !existsSync(chromium) && `no Chromium at ${chromium} (apt-get install chromium)`;

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

/** Chromium and the page server for one Server's HTTP listener. */
export class Browser {
  static async start(server) {
    const self = new Browser();
    self.pages = await pageServer(server.httpPort);
    const { default: puppeteer } = await import("puppeteer-core");
    try {
      self.browser = await puppeteer.launch({
        executablePath: chromium,
        headless: true,
        args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
      });
    } catch (e) {
      await self.close(); // the page server, so that the run ends
      throw e;
    }
    return self;
  }

  /**
   * Runs `fn(tab)` on a new tab showing the page for `transport` ("ws" or
   * "bosh"), then closes the tab; a failure shows the tail of the browser's
   * console. With `fresh`, the tab is in a browser context of its own (no
   * storage shared with any other tab: converse.js has no local cache),
   * closed with it.
   */
  async withTab(fn, { transport = "ws", fresh = false } = {}) {
    const context = fresh ? await this.browser.createBrowserContext() : this.browser;
    const tab = await context.newPage();
    const consoleLines = [];
    tab.on("console", (m) => consoleLines.push(m.text().slice(0, 500)));
    try {
      await tab.goto(`http://127.0.0.1:${this.pages.address().port}/${transport}.html`);
      return await fn(tab);
    } catch (e) {
      e.message += `\n--- browser console ---\n${consoleLines.slice(-60).join("\n")}`;
      throw e;
    } finally {
      await tab.close();
      if (fresh) await context.close();
    }
  }

  async close() {
    await this.browser?.close();
    this.pages.closeAllConnections();
    await new Promise((ok) => this.pages.close(ok));
  }
}

/**
 * Registers the node:test hooks of a converse.js scenario file: a Server
 * with the accounts alice (password "alice-secret") and bob ("bob-secret"),
 * Chromium (unless `noBrowser`) and bob online on TCP (resource "tcp").
 * Returns the object they fill: { server, web, bob, within }.
 */
export function converseSuite() {
  const suite = { within: (promise, what) => suite.server.within(promise, what) };
  before(async () => {
    const server = (suite.server = new Server());
    await server.start();
    server.addUser("alice", "alice-secret");
    server.addUser("bob", "bob-secret");
    if (noBrowser) return;
    suite.web = await Browser.start(server);
    suite.bob = server.client({ username: "bob", password: "bob-secret", resource: "tcp" });
    // XEP-0386: the server picks the full JID; chat() uses the one it bound.
    await suite.within(suite.bob.start(), "bob online");
  });
  // Everything is closed whatever failed, so that the run ends.
  after(async () => {
    await suite.bob?.stop().catch(() => {});
    await suite.web?.close();
    const { server } = suite;
    const code = await server.stop();
    assert.equal(code, 0, "starling exits 0 on SIGTERM");
    assert.ok(!server.logText().includes("panicked"), "no panic logged");
    server.cleanup();
  });
  return suite;
}

/** Waits until converse.js is online; resolves with its full JID. */
export async function online(tab) {
  await tab.waitForFunction(() => window.online, { timeout: STEP });
  return tab.evaluate(() => window.online);
}

/** Logs converse.js in as `jid`; resolves with the full JID bound. */
export async function login(tab, jid, password) {
  await tab.waitForFunction(() => window.api, { timeout: STEP });
  await tab.evaluate((jid, password) => window.api.user.login(jid, password), jid, password);
  return online(tab);
}

/**
 * A message each way between the browser (`jid`) and `peer`, an online
 * xmpp.js client of harness.js.
 */
export async function chat(tab, jid, peer, word) {
  const text = `from the browser: ${word}`;
  await tab.evaluate(
    (to, text) => {
      const { $msg } = window.converse.env;
      window.api.send($msg({ to, type: "chat" }).c("body").t(text));
    },
    peer.jid.toString(),
    text,
  );
  const got = await peer.nextMessage();
  assert.equal(got.getChildText("body"), text);
  assert.equal(got.attrs.from, jid, "RFC 6120 §8.1.2.1: stamped with the browser session's full JID");
  const reply = `to the browser: ${word}`;
  await peer.send(xml("message", { to: jid, type: "chat" }, xml("body", {}, reply)));
  await tab.waitForFunction((reply) => window.received.includes(reply), { timeout: STEP }, reply);
  return { sent: text, received: reply };
}
