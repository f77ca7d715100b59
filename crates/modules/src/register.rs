//! XEP-0077: In-Band Registration, for accounts on this server.
//!
//! Before authentication (an `IqTarget::Stream` handler: the client has no
//! address yet), a client asks for the registration fields and creates an
//! account (§3.1, §3.1.1); only when `allow_registration` is on, only on
//! encrypted streams (§11), and at most `max_per_ip` accounts per address per
//! window. The `<register/>` stream feature (§8) is offered under the same
//! conditions. After authentication, a user can always change their
//! password (§3.3) or delete their account (§3.2): the account's
//! subscriptions are cancelled first, so contacts' rosters follow, and its
//! sessions are closed with `<not-authorized/>`.
//!
//! Left out: data forms (§4, optional), the obsolete `<key/>` (§7) and the
//! legacy `code` attributes on errors (§9).

use crate::store::{account, store_error};
use serde::Deserialize;
use starling_core::module::{IqRequest, IqResult, IqTarget, StreamInfo};
use starling_core::{Module, ModuleContext, ModuleError, Outbound, Server};
use starling_proto::xml::{set_attr, text_element};
use starling_proto::{ns, BareJid, Element, ErrorType, FullJid, IqType, Stanza, StanzaError};
use starling_sasl::{HashAlg, ScramCredentials};
use starling_storage::StoreError;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Register;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegisterConfig {
    /// Anyone may create an account before logging in (§3.1). Password
    /// changes and account removal work whenever the module is loaded.
    pub allow_registration: bool,
    /// Accounts one IP address (IPv6: one /64) may create within
    /// `window_secs`; 0 = no limit.
    pub max_per_ip: u32,
    pub window_secs: u64,
    /// Shortest password accepted, in characters, for new accounts and
    /// password changes.
    pub min_password_length: usize,
}

impl Default for RegisterConfig {
    fn default() -> Self {
        RegisterConfig { allow_registration: false, max_per_ip: 3, window_secs: 3600, min_password_length: 8 }
    }
}

struct State {
    config: RegisterConfig,
    limiter: RateLimit,
}

impl Module for Register {
    const NAME: &'static str = "register";
    type Config = RegisterConfig;

    fn load(config: RegisterConfig, ctx: &mut ModuleContext) -> Result<Self, ModuleError> {
        // §10: lets logged-in clients see that password changes work in-band.
        ctx.add_feature(ns::REGISTER);
        if config.allow_registration {
            // §8, offered where registration would be accepted.
            ctx.add_pre_auth_feature(|stream| stream.secure.then(|| Element::bare("register", ns::REGISTER_FEATURE)));
        }
        let window = Duration::from_secs(config.window_secs);
        let state = Arc::new(State { limiter: RateLimit::new(config.max_per_ip, window), config });
        let s = state.clone();
        ctx.handle_iq(IqTarget::Stream, IqType::Get, ns::REGISTER, move |req| fields(s.clone(), req));
        let s = state.clone();
        ctx.handle_iq(IqTarget::Stream, IqType::Set, ns::REGISTER, move |req| register(s.clone(), req));
        // §3.2 and §3.3 are addressed to the server (`to` the host) or sent
        // without `to` (RFC 6120 §10.3: handled for the account).
        for target in [IqTarget::Host, IqTarget::Account] {
            ctx.handle_iq(target, IqType::Get, ns::REGISTER, registered);
            let s = state.clone();
            ctx.handle_iq(target, IqType::Set, ns::REGISTER, move |req| change(s.clone(), req));
        }
        Ok(Register)
    }
}

// ---- errors -------------------------------------------------------------

/// A condition `StanzaError` has no constructor for.
fn condition(type_: ErrorType, condition: &'static str, text: &str) -> StanzaError {
    StanzaError { type_, condition, text: Some(text.to_owned()), app_condition: None }
}

// ---- the request --------------------------------------------------------

fn query(req: &IqRequest) -> Result<&Element, StanzaError> {
    let query = req.payload();
    if !query.is("query", ns::REGISTER) {
        return Err(StanzaError::bad_request().with_text("expected <query xmlns='jabber:iq:register'/>"));
    }
    Ok(query)
}

/// The text of a field, `None` when absent.
fn field(query: &Element, name: &str) -> Option<String> {
    query.get_child(name, ns::REGISTER).map(Element::text)
}

/// The account's username (the localpart as stored: RFC 7622 normalised).
fn account_node(username: &str, host: &str) -> Result<String, StanzaError> {
    let invalid = || StanzaError::jid_malformed().with_text("the username is not a valid address localpart (RFC 7622)");
    if username.contains(['@', '/']) {
        return Err(invalid());
    }
    let jid = BareJid::new(&format!("{username}@{host}")).map_err(|_| invalid())?;
    match (jid.node(), jid.domain().as_str() == host) {
        (Some(node), true) => Ok(node.to_string()),
        _ => Err(invalid()),
    }
}

fn check_password(password: &str, min: usize) -> Result<(), StanzaError> {
    if password.chars().count() < min {
        return Err(StanzaError::not_acceptable().with_text(format!("the password needs at least {min} characters")));
    }
    Ok(())
}

/// SCRAM keys for every hash, as `starling user add` makes them; PBKDF2 is
/// CPU work, so off the async threads.
async fn credentials(server: &Server, password: String) -> Result<Vec<ScramCredentials>, StanzaError> {
    let iterations = server.config.auth.scram_iterations;
    let derived = tokio::task::spawn_blocking(move || {
        HashAlg::ALL.into_iter().map(|hash| ScramCredentials::generate(hash, &password, iterations)).collect()
    })
    .await;
    match derived {
        Ok(Ok(creds)) => Ok(creds),
        Ok(Err(_)) => Err(StanzaError::not_acceptable().with_text("the password is not valid (SASLprep, RFC 4013)")),
        Err(e) => {
            tracing::error!(error = %e, "deriving credentials failed");
            Err(StanzaError::internal_server_error())
        }
    }
}

// ---- before authentication: §3.1 ------------------------------------------

fn stream(req: &IqRequest) -> Result<&StreamInfo, StanzaError> {
    req.stream.as_ref().ok_or_else(StanzaError::internal_server_error)
}

/// §3.1: the fields to fill in (username and password only).
async fn fields(state: Arc<State>, req: IqRequest) -> IqResult {
    query(&req)?;
    if !state.config.allow_registration {
        // §3.1: a host without in-band registration.
        return Err(StanzaError::service_unavailable().with_text("in-band registration is disabled"));
    }
    if !stream(&req)?.secure {
        // §11: never over an unencrypted stream.
        return Err(StanzaError::not_authorized().with_text("registration needs an encrypted stream"));
    }
    let mut q = Element::bare("query", ns::REGISTER);
    let instructions = "Choose a username and password to register with this server.";
    q.append_child(text_element("instructions", ns::REGISTER, instructions));
    q.append_child(Element::bare("username", ns::REGISTER));
    q.append_child(Element::bare("password", ns::REGISTER));
    Ok(Some(q))
}

/// §3.1 and §3.1.1: creates the account; the client then authenticates
/// with it on the same stream.
async fn register(state: Arc<State>, req: IqRequest) -> IqResult {
    let query = query(&req)?;
    let stream = stream(&req)?;
    if query.has_child("remove", ns::REGISTER) {
        // §3.2: an IM server gets a remove without a `from`: nobody is
        // registered on this stream.
        return Err(condition(ErrorType::Wait, "unexpected-request", "authenticate before removing an account"));
    }
    if !state.config.allow_registration {
        return Err(StanzaError::not_allowed().with_text("in-band registration is disabled"));
    }
    if !stream.secure {
        return Err(StanzaError::not_authorized().with_text("registration needs an encrypted stream"));
    }
    // §3.1: every field of the form, none empty, or not-acceptable.
    let (username, password) = match (field(query, "username"), field(query, "password")) {
        (Some(u), Some(p)) if !u.is_empty() && !p.is_empty() => (u, p),
        _ => return Err(StanzaError::not_acceptable().with_text("a username and a password are required")),
    };
    let node = account_node(&username, &stream.host)?;
    check_password(&password, state.config.min_password_length)?;
    let server = &req.server;
    if server.store.exists(&stream.host, &node).await.map_err(store_error)? {
        return Err(StanzaError::conflict().with_text("the username is taken"));
    }
    // §3.1.1: too many registrations from one address.
    let ip = stream.peer.ip();
    if !state.limiter.acquire(ip) {
        tracing::info!(peer = %stream.peer, "in-band registration refused: rate limit");
        return Err(
            StanzaError::not_acceptable().with_text("too many accounts registered from your address; try later")
        );
    }
    let created = match credentials(server, password).await {
        Ok(creds) => server.store.create(&stream.host, &node, &creds).await.map_err(|e| match e {
            StoreError::AlreadyExists => StanzaError::conflict().with_text("the username is taken"),
            e => store_error(e),
        }),
        Err(e) => Err(e),
    };
    if let Err(e) = created {
        state.limiter.release(ip);
        return Err(e);
    }
    tracing::info!(peer = %stream.peer, account = %format!("{node}@{}", stream.host), "account registered in-band");
    Ok(None)
}

// ---- after authentication: §3.2, §3.3 --------------------------------------

/// The sender's session and account; the request must be about that account
/// (addressed to it, to its host, or to nobody).
fn own_account(req: &IqRequest) -> Result<(FullJid, BareJid), StanzaError> {
    let from =
        req.stanza.from.as_ref().and_then(|f| f.try_as_full().ok()).ok_or_else(StanzaError::service_unavailable)?;
    let bare = from.to_bare();
    if let Some(to) = &req.stanza.to {
        let about_other = match to.node() {
            Some(_) => to.to_bare() != bare,
            None => to.domain().as_str() != bare.domain().as_str(),
        };
        if about_other {
            return Err(StanzaError::forbidden().with_text("only your own account can be managed"));
        }
    }
    Ok((from.clone(), bare))
}

/// §3.1: an authenticated entity is told it is registered, and as whom.
async fn registered(req: IqRequest) -> IqResult {
    query(&req)?;
    let (_, bare) = own_account(&req)?;
    let mut q = Element::bare("query", ns::REGISTER);
    let instructions = "You are registered. Send a new password to change it, or <remove/> to delete the account.";
    q.append_child(text_element("instructions", ns::REGISTER, instructions));
    q.append_child(Element::bare("registered", ns::REGISTER));
    q.append_child(text_element("username", ns::REGISTER, account(&bare).1));
    q.append_child(Element::bare("password", ns::REGISTER));
    Ok(Some(q))
}

/// §3.3 (a new password) or §3.2 (`<remove/>`).
async fn change(state: Arc<State>, req: IqRequest) -> IqResult {
    let query = query(&req)?;
    let (full, bare) = own_account(&req)?;
    if query.has_child("remove", ns::REGISTER) {
        if query.children().count() != 1 {
            // §3.2 error table.
            return Err(StanzaError::bad_request().with_text("<remove/> must be the only child"));
        }
        return remove(&req, &full, &bare).await;
    }
    let (host, user) = account(&bare);
    if let Some(username) = field(query, "username") {
        if account_node(&username, host).ok().as_deref() != Some(user) && username != bare.as_str() {
            return Err(StanzaError::forbidden().with_text("only your own password can be changed"));
        }
    }
    // §3.3: an empty password never replaces the current one.
    let password = field(query, "password").unwrap_or_default();
    if password.is_empty() {
        return Err(StanzaError::bad_request().with_text("a non-empty <password/> is required"));
    }
    check_password(&password, state.config.min_password_length)?;
    let creds = credentials(&req.server, password).await?;
    match req.server.store.set_credentials(host, user, &creds).await {
        Ok(()) => {}
        Err(StoreError::NotFound) => {
            return Err(condition(ErrorType::Auth, "registration-required", "the account no longer exists"))
        }
        Err(e) => return Err(store_error(e)),
    }
    tracing::info!(account = %bare, "password changed in-band");
    Ok(None)
}

/// A presence of `type_` from `from` to `to`.
fn presence(type_: &str, from: &str, to: &str) -> Option<Stanza> {
    let mut el = Element::bare("presence", ns::CLIENT);
    set_attr(&mut el, "type", type_);
    set_attr(&mut el, "from", from);
    set_attr(&mut el, "to", to);
    Stanza::from_element(el, ns::CLIENT).ok()
}

/// §3.2: cancels the account's subscriptions (RFC 6121 §3.2, §3.3, as if
/// it sent them, so contacts' rosters change and get pushes through the
/// roster module's inbound hooks), deletes the account and everything it
/// owns, then ends its sessions with `<not-authorized/>` (RFC 6120 §4.9.3.12).
async fn remove(req: &IqRequest, full: &FullJid, bare: &BareJid) -> IqResult {
    let server = &req.server;
    let (host, user) = account(bare);
    let (_, items) = server.store.roster(host, user).await.map_err(store_error)?;
    let requests = server.store.subscription_requests(host, user).await.map_err(store_error)?;
    let available = server.router.presences(bare);
    for item in items.iter().filter(|i| i.subscription.has_from()) {
        // Contacts who saw the account available see it leave (RFC 6121 §3.2.3).
        for (session, _) in &available {
            if let Some(p) = presence("unavailable", session.as_str(), &item.contact) {
                server.deliver(p).await;
            }
        }
    }
    let subscribed = items.iter().filter(|i| i.subscription.has_to() || i.subscription.has_from() || i.ask);
    for contact in subscribed.map(|i| i.contact.as_str()) {
        for type_ in ["unsubscribe", "unsubscribed"] {
            if let Some(p) = presence(type_, bare.as_str(), contact) {
                server.deliver(p).await;
            }
        }
    }
    // Requests the account never answered: the requesters' items lose their ask.
    for (contact, _) in requests.iter().filter(|(c, _)| !items.iter().any(|i| i.contact == *c)) {
        if let Some(p) = presence("unsubscribed", bare.as_str(), contact) {
            server.deliver(p).await;
        }
    }
    if !server.store.remove(host, user).await.map_err(store_error)? {
        return Err(condition(ErrorType::Auth, "registration-required", "the account no longer exists"));
    }
    tracing::info!(account = %bare, "account removed in-band");
    for handle in server.router.resources(bare) {
        if handle.jid == *full {
            // The requester gets its result before the stream error, so it
            // is queued here, ahead of the close. The copy the core queues
            // after this handler returns is behind the close and never
            // written: the session drops what is left in its queue (an IQ
            // result without a `from` cannot even bounce).
            let _ = handle.send(Outbound::stanza(req.stanza.iq_result(None)));
        }
        let _ = handle.send(Outbound::Close("not-authorized"));
    }
    Ok(None)
}

// ---- rate limit ---------------------------------------------------------

/// Accounts created per address in a sliding window. A slot is taken before
/// the (slow) creation and given back if it fails, so concurrent attempts
/// cannot overshoot.
struct RateLimit {
    max: u32,
    window: Duration,
    created: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

/// Addresses tracked before stale ones are swept.
const SWEEP_AT: usize = 10_000;

impl RateLimit {
    fn new(max: u32, window: Duration) -> Self {
        RateLimit { max, window, created: Mutex::new(HashMap::new()) }
    }

    /// IPv4 addresses as they are (IPv4-mapped IPv6 too), IPv6 by /64: one
    /// host usually has a whole /64.
    fn key(ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(_) => ip,
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let mut segments = v6.segments();
                    segments[4..].fill(0);
                    IpAddr::V6(segments.into())
                }
            },
        }
    }

    fn acquire(&self, ip: IpAddr) -> bool {
        if self.max == 0 {
            return true;
        }
        let now = Instant::now();
        let mut created = self.created.lock().expect("rate limit lock");
        if created.len() >= SWEEP_AT {
            created.retain(|_, times| times.back().is_some_and(|t| now.duration_since(*t) < self.window));
        }
        let times = created.entry(Self::key(ip)).or_default();
        while times.front().is_some_and(|t| now.duration_since(*t) >= self.window) {
            times.pop_front();
        }
        if times.len() >= self.max as usize {
            return false;
        }
        times.push_back(now);
        true
    }

    fn release(&self, ip: IpAddr) {
        if let Some(times) = self.created.lock().expect("rate limit lock").get_mut(&Self::key(ip)) {
            times.pop_back();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_counts_per_address_and_gives_back_failures() {
        let limit = RateLimit::new(2, Duration::from_secs(60));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(limit.acquire(a) && limit.acquire(a));
        assert!(!limit.acquire(a));
        assert!(limit.acquire("192.0.2.2".parse().unwrap()), "other addresses have their own count");
        limit.release(a);
        assert!(limit.acquire(a), "a failed registration does not count");
        // One /64 is one client; IPv4-mapped addresses are IPv4.
        let v6 = RateLimit::new(1, Duration::from_secs(60));
        assert!(v6.acquire("2001:db8::1".parse().unwrap()));
        assert!(!v6.acquire("2001:db8::ffff:1".parse().unwrap()));
        assert!(v6.acquire("2001:db8:0:1::1".parse().unwrap()));
        assert!(v6.acquire("192.0.2.9".parse().unwrap()));
        assert!(!v6.acquire("::ffff:192.0.2.9".parse().unwrap()));
        let unlimited = RateLimit::new(0, Duration::from_secs(60));
        assert!((0..10).all(|_| unlimited.acquire(a)));
    }

    #[test]
    fn rate_limit_window_slides() {
        let limit = RateLimit::new(1, Duration::from_millis(30));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(limit.acquire(a));
        assert!(!limit.acquire(a));
        std::thread::sleep(Duration::from_millis(40));
        assert!(limit.acquire(a));
    }

    #[test]
    fn usernames_are_localparts() {
        assert_eq!(account_node("juliet", "example.com").unwrap(), "juliet");
        for bad in ["a@b", "a/b", "a b", "a\"b", "x:y<"] {
            let err = account_node(bad, "example.com").unwrap_err();
            assert_eq!(err.condition, "jid-malformed", "{bad}");
        }
        assert!(account_node(&"a".repeat(1024), "example.com").is_err(), "RFC 7622 §3.3.1: at most 1023 bytes");
    }

    #[test]
    fn short_passwords_are_not_acceptable() {
        assert!(check_password("12345678", 8).is_ok());
        assert_eq!(check_password("1234567", 8).unwrap_err().condition, "not-acceptable");
        assert!(check_password("ñññññññ", 7).is_ok(), "counted in characters");
    }
}
