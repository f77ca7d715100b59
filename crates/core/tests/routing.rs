//! `Server::deliver` and the domain table (RFC 6120 §10.4): a module's
//! service takes every address at its domain, routing-class hooks see
//! stanzas to the host, components get their queue (or the sender a
//! `service-unavailable`), other domains are remote.

use serde::Deserialize;
use starling_core::module::{Addressed, HookPoint, HookResult};
use starling_core::{Config, Module, ModuleContext, ModuleError, Outbound, Server};
use starling_proto::xml::{set_attr, text_element};
use starling_proto::{ns, Element, FullJid, Stanza, StanzaKind};
use starling_storage::SqlStore;
use std::sync::Arc;
use tokio::sync::mpsc;

const CONFIG: &str = "[server]\nhosts = [\"example.com\"]\nmodules = [\"rooms\", \"idle\"]\n\
    [[services]]\ndomain = \"rooms.example.com\"\nmodule = \"rooms\"\noptions = { greeting = \"welcome\" }\n\
    [[services]]\ndomain = \"gw.example.com\"\nsecret = \"s\"\n";

/// Serves its `[[services]]` domains by answering each message with the
/// domain's `greeting` option, and answers messages to the host itself.
struct Rooms;

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoConfig {}

fn message(from: &str, to: &str, body: &str) -> Stanza {
    let mut el = Element::bare("message", ns::CLIENT);
    set_attr(&mut el, "from", from);
    set_attr(&mut el, "to", to);
    el.append_child(text_element("body", ns::CLIENT, body));
    Stanza::from_element(el, ns::CLIENT).unwrap()
}

fn reply(stanza: &Stanza, body: &str) -> Stanza {
    let (from, to) = (stanza.from.as_ref().unwrap(), stanza.to.as_ref().unwrap());
    message(to.as_str(), from.as_str(), body)
}

impl Module for Rooms {
    const NAME: &'static str = "rooms";
    type Config = NoConfig;
    fn load(_: NoConfig, ctx: &mut ModuleContext) -> Result<Self, ModuleError> {
        for service in ctx.services().to_vec() {
            let greeting = service.options.get("greeting").and_then(|g| g.as_str()).unwrap_or_default().to_owned();
            ctx.serve_domain(&service.domain, move |server: Arc<Server>, stanza: Stanza| {
                let answer = reply(&stanza, &greeting);
                async move { server.deliver(answer).await }
            });
        }
        ctx.hook(HookPoint::To(StanzaKind::Message, Addressed::Host), 0, |server, stanza| async move {
            server.deliver(reply(&stanza, "host")).await;
            HookResult::Handled
        });
        Ok(Rooms)
    }
}

/// Registers nothing, whatever it is configured to serve.
struct Idle;

impl Module for Idle {
    const NAME: &'static str = "idle";
    type Config = NoConfig;
    fn load(_: NoConfig, _: &mut ModuleContext) -> Result<Self, ModuleError> {
        Ok(Idle)
    }
}

async fn server(config: &str) -> (Arc<Server>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let store = SqlStore::open(&url, 1).await.unwrap();
    (Server::new(Config::parse(config).unwrap(), Arc::new(store)), dir)
}

/// The next stanza queued for a session or component, as text.
fn next(rx: &mut mpsc::Receiver<Outbound>) -> String {
    match rx.try_recv() {
        Ok(Outbound::Stanza(el)) => String::from(&*el),
        other => panic!("expected a stanza, got {other:?}"),
    }
}

#[tokio::test]
async fn stanzas_go_where_the_domain_table_says() {
    let (server, _dir) = server(CONFIG).await;
    server.modules.load::<Rooms>(None).unwrap();
    let alice = FullJid::new("alice@example.com/r").unwrap();
    let (tx, mut rx) = mpsc::channel(8);
    server.router.bind(alice.clone(), tx, false).unwrap();

    // A module's service domain: any address at it reaches the module, with
    // that domain's options; its answer comes back from that address.
    server.deliver(message(alice.as_str(), "room@rooms.example.com/nick", "hi")).await;
    let out = next(&mut rx);
    assert!(out.contains("from='room@rooms.example.com/nick'") && out.contains("welcome"), "{out}");

    // A routing-class hook for messages to the host itself.
    server.deliver(message(alice.as_str(), "example.com", "hi")).await;
    let out = next(&mut rx);
    assert!(out.contains(">host<"), "{out}");

    // A component's domain: service-unavailable while it is not connected
    // (RFC 6120 §8.3.3.19), its queue once it is.
    server.deliver(message(alice.as_str(), "bot@gw.example.com", "hi")).await;
    let out = next(&mut rx);
    assert!(out.contains("<service-unavailable"), "{out}");
    let (ctx, mut crx) = mpsc::channel(8);
    let link = server.domains.attach_component("gw.example.com", ctx).unwrap();
    server.deliver(message(alice.as_str(), "bot@gw.example.com", "to the component")).await;
    let out = next(&mut crx);
    assert!(out.contains("to the component"), "{out}");
    server.domains.detach_component(&link);
    server.deliver(message(alice.as_str(), "bot@gw.example.com", "hi")).await;
    let out = next(&mut rx);
    assert!(out.contains("<service-unavailable"), "{out}");

    // Another server's domain: no federation yet (RFC 6120 §10.4.2).
    server.deliver(message(alice.as_str(), "juliet@example.org", "hi")).await;
    let out = next(&mut rx);
    assert!(out.contains("<remote-server-not-found"), "{out}");

    // The module gone, its domain is unavailable and its hook does not run.
    assert!(server.modules.unload("rooms"));
    server.deliver(message(alice.as_str(), "room@rooms.example.com", "hi")).await;
    let out = next(&mut rx);
    assert!(out.contains("<service-unavailable"), "{out}");
    server.deliver(message(alice.as_str(), "example.com", "hi")).await;
    assert!(rx.try_recv().is_err(), "no handler for messages to the host any more");
}

#[tokio::test]
async fn a_module_must_serve_the_domains_configured_for_it() {
    let config = CONFIG.replace("module = \"rooms\"", "module = \"idle\"");
    let (server, _dir) = server(&config).await;
    let err = server.modules.load::<Idle>(None).unwrap_err();
    assert!(matches!(&err, ModuleError::ServiceNotServed { domain, .. } if domain == "rooms.example.com"), "{err}");
    assert!(server.modules.loaded().is_empty(), "a failed load registers nothing");
    // Here no domain is configured for rooms: it serves none.
    server.modules.load::<Rooms>(None).unwrap();
}
