//! XEP-0363 HTTP File Upload. The service domain (`upload.<host>` unless
//! `[[services]]` says otherwise) hands out slots; the HTTP listeners take
//! the PUT and serve the GET under `/upload`. Files live in
//! `data_dir/upload/<owner>/<slot>/<name>`: `owner` is a keyed hash of the
//! uploader's bare JID (quotas without account names on disk), `slot` a
//! random id (unguessable URLs, §11), `name` the client's file name made safe
//! for a path. A PUT URL carries an HMAC over everything the slot allowed
//! and its expiry, so the HTTP side needs no state shared with the XMPP side.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use futures::StreamExt;
use hmac::Mac;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rand::RngCore;
use serde::Deserialize;
use starling_core::module::IqResult;
use starling_core::{secret, Module, ModuleContext, ModuleError, Server};
use starling_proto::xmpp_parsers::data_forms::{DataForm, DataFormType, Field};
use starling_proto::xmpp_parsers::disco::{DiscoInfoResult, Identity};
use starling_proto::xmpp_parsers::http_upload::{Get, Put, SlotRequest, SlotResult};
use starling_proto::{ns, xml, Element, IqType, Jid, Stanza, StanzaError, StanzaKind};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::AsyncWriteExt;

const NS_UPLOAD: &str = "urn:xmpp:http:upload:0";
/// Where the HTTP routes are mounted.
const HTTP_PATH: &str = "/upload";
/// Longest file name kept, in bytes.
const MAX_NAME_BYTES: usize = 200;
/// Beside each file, the content type it was uploaded with.
const TYPE_FILE: &str = ".type";
/// What an upload is written to until it is complete.
const PART_FILE: &str = ".part";

pub struct Upload;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UploadConfig {
    /// Largest file accepted, in bytes (advertised as `max-file-size`, §2).
    pub max_file_bytes: u64,
    /// Bytes of stored files one account may have; a slot beyond it is
    /// refused with `resource-constraint`.
    pub quota_bytes: u64,
    /// Days a file is kept; 0 keeps files until removed by hand.
    pub retention_days: u64,
    /// Seconds a PUT URL stays valid (§7 recommends about 300).
    pub slot_lifetime_secs: u64,
    /// Base of the URLs handed out (`https://upload.example.com`); default
    /// `http.public_url`, else `https://<host>:<port of http.tls_listen>`.
    pub base_url: Option<String>,
}

impl Default for UploadConfig {
    fn default() -> Self {
        UploadConfig {
            max_file_bytes: 100 * 1024 * 1024,
            quota_bytes: 1024 * 1024 * 1024,
            retention_days: 30,
            slot_lifetime_secs: 300,
            base_url: None,
        }
    }
}

impl Module for Upload {
    const NAME: &'static str = "upload";
    type Config = UploadConfig;

    fn load(config: UploadConfig, ctx: &mut ModuleContext) -> Result<Self, ModuleError> {
        if config.slot_lifetime_secs == 0 || config.max_file_bytes == 0 {
            return Err(ModuleError::Failed {
                module: Self::NAME,
                message: "slot_lifetime_secs and max_file_bytes must be at least 1".into(),
            });
        }
        let uploads = Arc::new(Uploads { config, files: OnceLock::new() });
        for service in ctx.services().to_vec() {
            let uploads = uploads.clone();
            ctx.serve_domain(&service.domain, move |server, stanza| {
                let uploads = uploads.clone();
                async move { uploads.handle(&server, stanza).await }
            });
        }
        ctx.serve_http(HTTP_PATH, move |server| uploads.routes(server));
        Ok(Upload)
    }
}

struct Uploads {
    config: UploadConfig,
    /// Made on first use: the data directory comes with the server.
    files: OnceLock<Files>,
}

/// The upload directory and the key that signs its URLs.
struct Files {
    root: PathBuf,
    key: [u8; 32],
}

/// What a PUT URL allows, signed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
struct PutGrant {
    size: u64,
    #[serde(rename = "type")]
    content_type: String,
    expires: u64,
    sig: String,
}

/// A file's place: `<owner>/<slot>/<name>`.
#[derive(Debug, Deserialize)]
struct FilePath {
    owner: String,
    slot: String,
    name: String,
}

impl Uploads {
    fn files(&self, server: &Server) -> std::io::Result<&Files> {
        if let Some(files) = self.files.get() {
            return Ok(files);
        }
        let data_dir = &server.config.server.data_dir;
        let root = data_dir.join("upload");
        std::fs::create_dir_all(&root)?;
        let key = secret::load_or_create_key(&data_dir.join("upload.key"))?;
        Ok(self.files.get_or_init(|| Files { root, key }))
    }

    async fn handle(&self, server: &Arc<Server>, stanza: Stanza) {
        match stanza.kind {
            StanzaKind::Iq if stanza.iq_type().is_some_and(IqType::is_request) => {
                let result = self.answer(server, &stanza).await;
                server.answer_iq(&stanza, result);
            }
            StanzaKind::Message if !stanza.is_type("error") => {
                server.bounce(&stanza, StanzaError::service_unavailable())
            }
            _ => {}
        }
    }

    async fn answer(&self, server: &Arc<Server>, stanza: &Stanza) -> IqResult {
        let payload = stanza.payload().ok_or_else(StanzaError::bad_request)?;
        match (stanza.iq_type(), payload.name(), payload.ns().as_str()) {
            (Some(IqType::Get), "query", ns::DISCO_INFO) => Ok(Some(self.disco_info())),
            (Some(IqType::Get), "query", ns::DISCO_ITEMS) => {
                Ok(Some(Element::builder("query", ns::DISCO_ITEMS).build()))
            }
            (Some(IqType::Get), "request", NS_UPLOAD) => self.slot(server, stanza, payload).await.map(Some),
            _ => Err(StanzaError::service_unavailable()),
        }
    }

    /// §2: the identity, the feature and the largest file size.
    fn disco_info(&self) -> Element {
        let max = self.config.max_file_bytes.to_string();
        DiscoInfoResult {
            node: None,
            identities: vec![Identity {
                category: "store".into(),
                type_: "file".into(),
                lang: None,
                name: Some("HTTP File Upload".into()),
            }],
            features: [ns::DISCO_INFO, NS_UPLOAD].map(String::from).into(),
            extensions: vec![DataForm::new(
                DataFormType::Result_,
                NS_UPLOAD,
                vec![Field::text_single("max-file-size", &max)],
            )],
        }
        .into()
    }

    /// §4: a slot for a local account, within the size limit and its quota.
    async fn slot(&self, server: &Arc<Server>, stanza: &Stanza, payload: &Element) -> Result<Element, StanzaError> {
        let from = stanza.from.as_ref().ok_or_else(StanzaError::bad_request)?;
        if from.node().is_none() || !server.domains.is_host(from.domain().as_str()) {
            return Err(StanzaError::forbidden().with_text("only accounts of this server may upload"));
        }
        let request = SlotRequest::try_from(payload.clone())
            .map_err(|e| StanzaError::bad_request().with_text(format!("invalid slot request: {e}")))?;
        if request.size == 0 {
            return Err(StanzaError::bad_request().with_text("size must be at least 1 byte"));
        }
        if request.size > self.config.max_file_bytes {
            return Err(file_too_large(self.config.max_file_bytes));
        }
        let name = safe_file_name(&request.filename)
            .ok_or_else(|| StanzaError::bad_request().with_text("the file name is empty or too long"))?;
        let content_type = match request.content_type.as_deref().map(str::trim) {
            None | Some("") => "application/octet-stream".to_owned(),
            Some(t) if is_media_type(t) => t.to_ascii_lowercase(),
            Some(_) => return Err(StanzaError::bad_request().with_text("invalid content-type")),
        };
        let base = self.base_url(server, from).ok_or_else(|| {
            StanzaError::service_unavailable().with_text("no HTTP listener is configured for uploads")
        })?;
        let files = self.files(server).map_err(internal)?;
        let owner = files.owner(&from.to_bare().to_string());
        let used = tokio::task::spawn_blocking({
            let dir = files.root.join(&owner);
            move || bytes_under(&dir)
        })
        .await
        .map_err(internal)?;
        if used.saturating_add(request.size) > self.config.quota_bytes {
            return Err(StanzaError::resource_constraint()
                .with_text(format!("upload quota reached: {used} of {} bytes in use", self.config.quota_bytes)));
        }
        let mut slot = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut slot);
        let slot = hex::encode(slot);
        let expires = unix_now() + self.config.slot_lifetime_secs;
        let grant = files.grant(&owner, &slot, &name, request.size, content_type, expires);
        let get = format!("{base}{HTTP_PATH}/{owner}/{slot}/{}", utf8_percent_encode(&name, PATH_SEGMENT));
        let put = format!(
            "{get}?size={}&type={}&expires={}&sig={}",
            grant.size,
            utf8_percent_encode(&grant.content_type, NON_ALPHANUMERIC),
            grant.expires,
            grant.sig
        );
        Ok(SlotResult { put: Put { url: put, headers: vec![] }, get: Get { url: get } }.into())
    }

    fn base_url(&self, server: &Server, from: &Jid) -> Option<String> {
        let http = &server.config.http;
        if let Some(url) = self.config.base_url.as_ref().or(http.public_url.as_ref()) {
            return Some(url.trim_end_matches('/').to_owned());
        }
        let port = http.tls_listen.first()?.port();
        Some(match port {
            443 => format!("https://{}", from.domain()),
            _ => format!("https://{}:{port}", from.domain()),
        })
    }

    fn routes(self: &Arc<Self>, server: Arc<Server>) -> axum::Router {
        if self.config.retention_days > 0 {
            tokio::spawn(purge_expired(self.clone(), server.clone()));
        }
        axum::Router::new()
            .route("/{owner}/{slot}/{name}", put(put_file).get(get_file).head(get_file).options(preflight))
            .with_state((self.clone(), server))
    }
}

impl Files {
    fn owner(&self, bare: &str) -> String {
        hex::encode(&secret::mac(&self.key, &["upload owner", bare]).finalize().into_bytes()[..16])
    }

    fn grant_mac(
        &self,
        owner: &str,
        slot: &str,
        name: &str,
        size: u64,
        content_type: &str,
        expires: u64,
    ) -> hmac::Hmac<sha2::Sha256> {
        let (size, expires) = (size.to_string(), expires.to_string());
        secret::mac(&self.key, &["upload put", owner, slot, name, &size, content_type, &expires])
    }

    fn grant(&self, owner: &str, slot: &str, name: &str, size: u64, content_type: String, expires: u64) -> PutGrant {
        let mac = self.grant_mac(owner, slot, name, size, &content_type, expires);
        let sig = hex::encode(mac.finalize().into_bytes());
        PutGrant { size, content_type, expires, sig }
    }

    /// Whether `grant` is one we signed for this file and is still valid at `now`.
    fn check(&self, path: &FilePath, grant: &PutGrant, now: u64) -> Result<(), &'static str> {
        let sig = hex::decode(&grant.sig).map_err(|_| "malformed signature")?;
        self.grant_mac(&path.owner, &path.slot, &path.name, grant.size, &grant.content_type, grant.expires)
            .verify_slice(&sig)
            .map_err(|_| "invalid signature")?;
        if now >= grant.expires {
            return Err("this upload URL has expired");
        }
        Ok(())
    }

    /// The slot directory of a well-formed path (hex ids, a name as
    /// [`safe_file_name`] makes them): nothing else touches the disk.
    fn slot_dir(&self, path: &FilePath) -> Option<PathBuf> {
        let well_formed = is_hex(&path.owner, 32)
            && is_hex(&path.slot, 32)
            && safe_file_name(&path.name).is_some_and(|n| n == path.name);
        well_formed.then(|| self.root.join(&path.owner).join(&path.slot))
    }
}

type UploadState = State<(Arc<Uploads>, Arc<Server>)>;

fn text_response(status: StatusCode, text: &'static str) -> Response {
    (status, cors_headers(), text).into_response()
}

/// §5: stores the body if the URL's grant is valid, the body is exactly the
/// granted size and of the granted type, and the slot is still empty.
async fn put_file(
    State((uploads, server)): UploadState,
    Path(path): Path<FilePath>,
    Query(grant): Query<PutGrant>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let files = match uploads.files(&server) {
        Ok(files) => files,
        Err(e) => return io_failure(e),
    };
    let Some(dir) = files.slot_dir(&path) else {
        return text_response(StatusCode::NOT_FOUND, "no such upload slot\n");
    };
    if let Err(why) = files.check(&path, &grant, unix_now()) {
        return text_response(StatusCode::FORBIDDEN, why);
    }
    let length = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if length != Some(grant.size) {
        return text_response(StatusCode::BAD_REQUEST, "Content-Length must be the size of the slot request\n");
    }
    let declared = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(media_type_essence);
    if declared.is_some_and(|t| t != media_type_essence(&grant.content_type)) {
        return text_response(StatusCode::BAD_REQUEST, "Content-Type differs from the slot request\n");
    }
    if let Err(e) = tokio::fs::create_dir_all(&dir).await {
        return io_failure(e);
    }
    // The part file is the slot's lock: a second PUT finds it (or the file).
    let part = dir.join(PART_FILE);
    let mut file = match tokio::fs::OpenOptions::new().write(true).create_new(true).open(&part).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return text_response(StatusCode::CONFLICT, "this slot has been used\n");
        }
        Err(e) => return io_failure(e),
    };
    if tokio::fs::try_exists(dir.join(&path.name)).await.unwrap_or(true) {
        let _ = tokio::fs::remove_file(&part).await;
        return text_response(StatusCode::CONFLICT, "this slot has been used\n");
    }
    let mut written = 0u64;
    let mut stream = body.into_data_stream();
    let outcome = loop {
        match stream.next().await {
            None if written == grant.size => break Ok(()),
            None => break Err(text_response(StatusCode::BAD_REQUEST, "the body is shorter than its length\n")),
            Some(Err(_)) => break Err(text_response(StatusCode::BAD_REQUEST, "the upload was cut off\n")),
            Some(Ok(chunk)) => {
                written += chunk.len() as u64;
                if written > grant.size {
                    break Err(text_response(StatusCode::PAYLOAD_TOO_LARGE, "the body is longer than the slot\n"));
                }
                if let Err(e) = file.write_all(&chunk).await {
                    break Err(io_failure(e));
                }
            }
        }
    };
    let finished = match outcome {
        Ok(()) => async {
            file.sync_all().await?;
            tokio::fs::write(dir.join(TYPE_FILE), &grant.content_type).await?;
            tokio::fs::rename(&part, dir.join(&path.name)).await
        }
        .await
        .map_err(io_failure),
        Err(response) => Err(response),
    };
    match finished {
        Ok(()) => {
            tracing::debug!(slot = %path.slot, bytes = written, "file uploaded");
            text_response(StatusCode::CREATED, "")
        }
        Err(response) => {
            // Nothing half-written is ever served, and the slot can be tried again.
            let _ = tokio::fs::remove_file(&part).await;
            response
        }
    }
}

/// Serves a stored file, marked so that browsers never run it as active
/// content on our origin (§11.1).
async fn get_file(State((uploads, server)): UploadState, Path(path): Path<FilePath>) -> Response {
    let files = match uploads.files(&server) {
        Ok(files) => files,
        Err(e) => return io_failure(e),
    };
    let Some(dir) = files.slot_dir(&path) else {
        return text_response(StatusCode::NOT_FOUND, "no such file\n");
    };
    let file = match tokio::fs::File::open(dir.join(&path.name)).await {
        Ok(file) => file,
        Err(_) => return text_response(StatusCode::NOT_FOUND, "no such file\n"),
    };
    let length = match file.metadata().await {
        Ok(meta) => meta.len(),
        Err(e) => return io_failure(e),
    };
    let content_type =
        tokio::fs::read_to_string(dir.join(TYPE_FILE)).await.unwrap_or_else(|_| "application/octet-stream".into());
    let mut headers = cors_headers();
    let inline = ["image/", "audio/", "video/"].iter().any(|p| content_type.starts_with(p));
    if let Ok(value) = HeaderValue::from_str(&content_type) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    headers.insert(header::CONTENT_LENGTH, length.into());
    headers.insert(header::CONTENT_DISPOSITION, HeaderValue::from_static(if inline { "inline" } else { "attachment" }));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable"));
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    (StatusCode::OK, headers, body).into_response()
}

/// CORS preflight for web clients on other origins (§10).
async fn preflight() -> Response {
    let mut headers = cors_headers();
    headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("OPTIONS, HEAD, GET, PUT"));
    headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("Authorization, Content-Type"));
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
    (StatusCode::NO_CONTENT, headers).into_response()
}

/// Any origin: the URLs themselves are the capability.
fn cors_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    headers
}

fn io_failure(e: std::io::Error) -> Response {
    tracing::error!(error = %e, "upload storage failed");
    text_response(StatusCode::INTERNAL_SERVER_ERROR, "storage failed\n")
}

fn internal(e: impl std::fmt::Display) -> StanzaError {
    tracing::error!(error = %e, "upload service failed");
    StanzaError::internal_server_error()
}

/// Removes files older than the retention, and parts of uploads abandoned
/// long ago, once an hour until shutdown.
async fn purge_expired(uploads: Arc<Uploads>, server: Arc<Server>) {
    let retention = Duration::from_secs(uploads.config.retention_days * 86_400);
    let abandoned = Duration::from_secs(uploads.config.slot_lifetime_secs * 2);
    let mut shutdown = server.shutdown.subscribe();
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = starling_core::server::shutting_down(&mut shutdown) => return,
        }
        let root = match uploads.files(&server) {
            Ok(files) => files.root.clone(),
            Err(e) => {
                tracing::warn!(error = %e, "upload directory unavailable; not purging");
                continue;
            }
        };
        match tokio::task::spawn_blocking(move || purge(&root, retention, abandoned)).await {
            Ok(removed) if removed > 0 => tracing::info!(removed, "expired uploads removed"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "upload purge failed"),
        }
    }
}

/// Removes the slot directories under `root` whose file is older than
/// `retention`, or whose upload never finished within `abandoned`.
fn purge(root: &std::path::Path, retention: Duration, abandoned: Duration) -> usize {
    let now = SystemTime::now();
    let older_than = |p: &std::path::Path, age: Duration| {
        std::fs::metadata(p).and_then(|m| m.modified()).is_ok_and(|t| now.duration_since(t).unwrap_or_default() > age)
    };
    let mut removed = 0;
    for slot in dirs(root).flat_map(|owner| dirs(&owner)) {
        let expired = if slot.join(TYPE_FILE).exists() {
            older_than(&slot.join(TYPE_FILE), retention)
        } else {
            older_than(&slot, abandoned)
        };
        if expired && std::fs::remove_dir_all(&slot).is_ok() {
            removed += 1;
        }
    }
    removed
}

fn dirs(dir: &std::path::Path) -> impl Iterator<Item = PathBuf> {
    std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path()).filter(|p| p.is_dir())
}

/// Bytes of the files in the slots under an owner's directory.
fn bytes_under(owner: &std::path::Path) -> u64 {
    dirs(owner)
        .flat_map(|slot| std::fs::read_dir(slot).into_iter().flatten().flatten())
        .filter_map(|entry| entry.metadata().ok())
        .map(|meta| meta.len())
        .sum()
}

/// §4 error: not-acceptable with the largest size allowed.
fn file_too_large(max: u64) -> StanzaError {
    let mut limit = xml::element("file-too-large", NS_UPLOAD, &[]);
    limit.append_child(xml::text_element("max-file-size", NS_UPLOAD, max.to_string()));
    StanzaError::not_acceptable()
        .with_text(format!("File too large. The maximum file size is {max} bytes"))
        .with_app_condition(limit)
}

/// The client's file name as one path segment: no separators or control
/// characters, no leading dot (no `..`, no hidden or part files); keeps the
/// ending (§4: the file ending SHOULD stay intact).
fn safe_file_name(name: &str) -> Option<String> {
    let cleaned: String = name.chars().map(|c| if c == '/' || c == '\\' || c.is_control() { '_' } else { c }).collect();
    let cleaned = cleaned.trim().trim_start_matches('.').trim_start();
    (!cleaned.is_empty() && cleaned.len() <= MAX_NAME_BYTES).then(|| cleaned.to_owned())
}

/// `type/subtype` with optional parameters, printable ASCII only.
fn is_media_type(t: &str) -> bool {
    t.len() <= 255
        && t.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
        && media_type_essence(t).split_once('/').is_some_and(|(a, b)| !a.is_empty() && !b.is_empty())
}

fn media_type_essence(t: &str) -> String {
    t.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()
}

/// Everything but unreserved characters, percent-encoded (RFC 3986 §2.3).
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> Files {
        Files { root: PathBuf::from("/nonexistent"), key: [7; 32] }
    }

    fn path(name: &str) -> FilePath {
        FilePath { owner: "a".repeat(32), slot: "b".repeat(32), name: name.into() }
    }

    #[test]
    fn file_names_become_one_safe_segment_with_their_ending() {
        assert_eq!(safe_file_name("très cool.jpg").as_deref(), Some("très cool.jpg"));
        assert_eq!(safe_file_name("../../etc/passwd").as_deref(), Some("_.._etc_passwd"));
        assert_eq!(safe_file_name(".part").as_deref(), Some("part"));
        assert_eq!(safe_file_name("a\nb\\c").as_deref(), Some("a_b_c"));
        assert_eq!(safe_file_name(" .. "), None);
        assert_eq!(safe_file_name(&"x".repeat(MAX_NAME_BYTES + 1)), None);
        for name in ["a b.png", "_.._etc_passwd"] {
            assert_eq!(safe_file_name(name).as_deref(), Some(name), "idempotent: GET checks names with it");
        }
    }

    #[test]
    fn a_grant_is_bound_to_its_file_size_type_and_expiry() {
        let files = files();
        let file = path("f.txt");
        let grant = files.grant(&file.owner, &file.slot, &file.name, 10, "text/plain".into(), 1000);
        assert_eq!(files.check(&file, &grant, 999), Ok(()));
        // XEP-0363 §7: PUT URLs expire.
        assert_eq!(files.check(&file, &grant, 1000), Err("this upload URL has expired"));
        for forged in [
            PutGrant { size: 11, ..grant.clone() },
            PutGrant { content_type: "text/html".into(), ..grant.clone() },
            PutGrant { expires: 5000, ..grant.clone() },
        ] {
            assert_eq!(files.check(&file, &forged, 999), Err("invalid signature"), "{forged:?}");
        }
        assert_eq!(files.check(&path("g.txt"), &grant, 999), Err("invalid signature"));
        assert_eq!(files.check(&file, &PutGrant { sig: "zz".into(), ..grant }, 999), Err("malformed signature"));
    }

    #[test]
    fn only_well_formed_paths_reach_the_disk() {
        let files = files();
        assert!(files.slot_dir(&path("f.txt")).is_some());
        assert!(files.slot_dir(&path("..")).is_none());
        assert!(files.slot_dir(&path(".type")).is_none());
        assert!(files.slot_dir(&FilePath { owner: "..".into(), ..path("f") }).is_none());
        assert!(files.slot_dir(&FilePath { slot: "B".repeat(32), ..path("f") }).is_none());
    }
}
