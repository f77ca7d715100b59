// A real `starling serve` per scenario (own temp dir, free ports, accounts
// made with the admin CLI), for xmpp.js (@xmpp/client from npm) clients.
// With STARLING_DATABASE_URL naming PostgreSQL, each server gets a fresh
// database there (made and dropped with psql), like tests/interop/harness.py.

import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync, existsSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { randomUUID } from "node:crypto";
import { setTimeout as delay } from "node:timers/promises";
import { client } from "@xmpp/client";

/** How long one step of a scenario (a login, a message) may take. */
export const STEP = 20_000;

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const binary = resolve(root, process.env.STARLING_BIN ?? "target/debug/starling");

async function freePort() {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => ok(port));
    });
    srv.on("error", fail);
  });
}

function psql(url, sql) {
  const out = spawnSync("psql", ["--no-psqlrc", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql], {
    encoding: "utf8",
    timeout: 60_000,
  });
  if (out.status !== 0) throw new Error(`psql ${sql}: ${out.stderr || out.error}`);
}

/** The admin URL with its database name replaced. */
function withDatabase(url, name) {
  const u = new URL(url);
  u.pathname = `/${name}`;
  return u.toString();
}

export class Server {
  constructor() {
    this.dir = mkdtempSync(join(tmpdir(), "starling-js-"));
    this.config = join(this.dir, "starling.toml");
    this.pidfile = join(this.dir, "starling.pid");
    this.log = join(this.dir, "server.log");
    this.env = { ...process.env, RUST_LOG: "debug,sqlx=warn", NO_COLOR: "1" };
    const admin = process.env.STARLING_DATABASE_URL ?? "";
    if (/^postgres(ql)?:\/\//.test(admin)) {
      this.admin = admin;
      this.database = `starling_js_${randomUUID().replaceAll("-", "")}`;
      psql(admin, `CREATE DATABASE ${this.database}`);
      this.env.STARLING_DATABASE_URL = withDatabase(admin, this.database);
    } else {
      delete this.env.STARLING_DATABASE_URL;
    }
  }

  async start() {
    if (!existsSync(binary)) throw new Error(`starling binary not found at ${binary}`);
    this.port = await freePort();
    this.tlsPort = await freePort();
    // WebSocket and BOSH (RFC 7395, XEP-0206) on a plain loopback listener.
    this.httpPort = await freePort();
    writeFileSync(
      this.config,
      `[server]\nhosts = ["localhost"]\ndata_dir = "${join(this.dir, "data")}"\n\n` +
        `[c2s]\nlisten = ["127.0.0.1:${this.port}"]\ndirect_tls_listen = ["127.0.0.1:${this.tlsPort}"]\n\n` +
        `[http]\nlisten = ["127.0.0.1:${this.httpPort}"]\ntls_listen = []\n\n` +
        // Federation's default port would collide between servers.
        `[s2s]\nlisten = []\n`,
    );
    const { openSync } = await import("node:fs");
    const log = openSync(this.log, "a");
    this.proc = spawn(binary, ["--config", this.config, "serve", "--pidfile", this.pidfile], {
      stdio: ["ignore", "ignore", log],
      env: this.env,
    });
    const deadline = Date.now() + 30_000;
    while (!existsSync(this.pidfile)) {
      if (this.proc.exitCode !== null) throw new Error(`starling exited at start:\n${this.logText()}`);
      if (Date.now() > deadline) throw new Error(`starling did not start:\n${this.logText()}`);
      await delay(20);
    }
  }

  addUser(user, password) {
    const out = spawnSync(binary, ["--config", this.config, "user", "add", `${user}@localhost`, password], {
      env: this.env,
      encoding: "utf8",
    });
    if (out.status !== 0) throw new Error(`user add: ${out.stderr}`);
  }

  logText() {
    return existsSync(this.log) ? readFileSync(this.log, "utf8") : "";
  }

  /** SIGTERM; resolves with the exit code. */
  async stop() {
    const exited = new Promise((ok) => this.proc.once("exit", (code) => ok(code)));
    this.proc.kill("SIGTERM");
    return exited;
  }

  /** `promise`, or a failure after `STEP` that shows the log's tail. */
  within(promise, what) {
    let timer;
    const timeout = new Promise((_, fail) => {
      timer = setTimeout(() => fail(new Error(`timed out: ${what}\n${this.logText().slice(-4000)}`)), STEP);
    });
    return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
  }

  /**
   * An @xmpp/client for this server (TCP unless `options.service` says
   * otherwise) whose `nextMessage()` resolves with the next message
   * received that has a body (`pendingMessages()`: how many are queued).
   */
  client(options) {
    // A debug build on a busy machine: xmpp.js's 2 s per step is too short.
    const xmpp = client({ service: `xmpp://127.0.0.1:${this.port}`, domain: "localhost", timeout: STEP / 2, ...options });
    xmpp.on("error", () => {});
    const messages = [];
    const waiting = [];
    xmpp.on("stanza", (stanza) => {
      if (!stanza.is("message") || !stanza.getChild("body")) return;
      const next = waiting.shift();
      if (next) next(stanza);
      else messages.push(stanza);
    });
    xmpp.nextMessage = () => {
      const queued = messages.shift();
      return this.within(queued ? Promise.resolve(queued) : new Promise((ok) => waiting.push(ok)), "a message");
    };
    xmpp.pendingMessages = () => messages.length;
    return xmpp;
  }

  cleanup() {
    if (this.database) psql(this.admin, `DROP DATABASE IF EXISTS ${this.database} WITH (FORCE)`);
    rmSync(this.dir, { recursive: true, force: true });
  }
}
