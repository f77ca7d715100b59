// converse.js 14 (npm) in Chromium, driven by puppeteer-core: a browser
// client logs in over WebSocket (RFC 7395) and, separately, over BOSH
// (XEP-0124 / XEP-0206), exchanges messages both ways with an xmpp.js client
// on TCP, then reloads the page and logs in again.

import { test } from "node:test";
import assert from "node:assert/strict";
import { converseSuite, noBrowser, online, login, chat } from "./browser.js";

process.env.NODE_TLS_REJECT_UNAUTHORIZED = "0";

const suite = converseSuite();

for (const [transport, name] of [
  ["ws", "WebSocket (RFC 7395)"],
  ["bosh", "BOSH (XEP-0206)"],
]) {
  test(`converse.js over ${name}: log in, chat with a TCP client, reload, log in again`, { skip: noBrowser }, () =>
    suite.web.withTab(
      async (tab) => {
        const jid = await login(tab, "alice@localhost/web", "alice-secret");
        assert.equal(jid, "alice@localhost/web");
        await chat(tab, jid, suite.bob, `${transport} first`);
        // converse.js keeps its login in sessionStorage: after a reload it
        // logs in again by itself (WebSocket: SASL with the stored SCRAM
        // keys; BOSH: it takes the same session up again, XEP-0124 §14
        // request ids carrying on).
        await tab.reload();
        const again = await online(tab);
        assert.match(again, /^alice@localhost\/.+/);
        await chat(tab, again, suite.bob, `${transport} after reload`);
      },
      { transport },
    ),
  );
}
