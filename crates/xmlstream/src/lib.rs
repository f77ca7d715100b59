//! Sans-IO incremental parser for XMPP XML streams (RFC 6120 §4 and §11).
//!
//! Bytes from the socket go in through [`StreamParser::feed`]; stream
//! events come out: the stream header, each complete top-level element
//! (stanza, `stream:features`, SASL/TLS nonzas, ...) as a
//! [`minidom::Element`], and the stream close. No I/O, no async.
//!
//! Built on rxml's `RawParser` (rather than its namespace-resolving
//! `Parser`) because the stream header needs information that the resolver
//! hides: the prefix of the root element and the default namespace it
//! declares (the content namespace). Doing the namespace resolution here
//! also lets us count attributes before a whole start tag is buffered.

use std::collections::HashMap;

use minidom::Element;
use rxml::error::EndOrError;
use rxml::xml_map::Entry;
use rxml::{AttrMap, Namespace, NcName, Parse, RawEvent, RawParser, RawQName, WithOptions};

mod write;

pub use write::{escape_attr, stream_header, to_bytes, write_element};

/// Namespace of the stream root and of `stream:features` / `stream:error`.
pub const NS_STREAMS: &str = "http://etherx.jabber.org/streams";

/// Resource limits applied while parsing, to bound memory and CPU per
/// connection.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Maximum size in bytes of one top-level element, as sent on the wire.
    pub max_stanza_bytes: usize,
    /// Maximum element nesting within one stanza; the stanza element itself
    /// is depth 1.
    pub max_depth: usize,
    /// Maximum number of attributes on one element, namespace declarations
    /// included (they cost the same to process).
    pub max_attributes: usize,
    /// Maximum bytes before the stream header is complete, XML declaration
    /// included.
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_stanza_bytes: 256 * 1024, max_depth: 32, max_attributes: 64, max_header_bytes: 4096 }
    }
}

/// The attributes of the peer's `<stream:stream>` opening tag.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StreamHeader {
    pub to: Option<String>,
    pub from: Option<String>,
    pub id: Option<String>,
    pub version: Option<String>,
    /// `xml:lang` of the stream.
    pub lang: Option<String>,
    /// Default namespace of the stream's content, e.g. "jabber:client";
    /// empty if the header declares none. Checking that it is supported
    /// (invalid-namespace otherwise) is the caller's job.
    pub content_ns: String,
}

/// What the parser recognised in the bytes fed to it.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamEvent {
    /// The peer's stream header (also after every [`StreamParser::reset`]).
    Open(StreamHeader),
    /// A complete direct child of the stream root, namespaces resolved.
    Stanza(Element),
    /// `</stream:stream>`; later bytes are ignored.
    Close,
}

/// Why the stream must be closed, as the RFC 6120 §4.9.3 condition to send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// XML syntax, bad UTF-8, mismatched tags, undeclared prefix, ...
    #[error("not-well-formed: {0}")]
    NotWellFormed(String),
    /// Forbidden XML features (RFC 6120 §11.1): DTDs, comments, processing
    /// instructions, entities other than the predefined ones.
    #[error("restricted-xml: {0}")]
    RestrictedXml(String),
    /// The root is not `{http://etherx.jabber.org/streams}stream`.
    #[error("invalid-namespace")]
    InvalidNamespace,
    /// The root is in the streams namespace but has no prefix (it was
    /// declared as the default namespace).
    #[error("bad-namespace-prefix")]
    BadNamespacePrefix,
    /// A limit from [`Limits`] was exceeded.
    #[error("policy-violation: {0}")]
    PolicyViolation(String),
    /// Never produced by this crate; for callers rejecting a top-level
    /// element they do not understand.
    #[error("unsupported-stanza-type")]
    UnsupportedStanzaType,
    /// Non-whitespace character data directly under the stream root.
    #[error("invalid-xml: {0}")]
    InvalidXml(String),
    /// XML declaration with an encoding other than UTF-8 (RFC 6120 §11.6).
    #[error("unsupported-encoding")]
    UnsupportedEncoding,
}

impl StreamError {
    /// The defined-condition element name to put into `<stream:error/>`.
    pub fn condition(&self) -> &'static str {
        match self {
            Self::NotWellFormed(_) => "not-well-formed",
            Self::RestrictedXml(_) => "restricted-xml",
            Self::InvalidNamespace => "invalid-namespace",
            Self::BadNamespacePrefix => "bad-namespace-prefix",
            Self::PolicyViolation(_) => "policy-violation",
            Self::UnsupportedStanzaType => "unsupported-stanza-type",
            Self::InvalidXml(_) => "invalid-xml",
            Self::UnsupportedEncoding => "unsupported-encoding",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Before the root start tag is complete.
    Header,
    /// Inside the stream root.
    Open,
    /// After `</stream:stream>`.
    Closed,
}

/// In-scope namespace declarations. Lookups are hashed so that a crafted
/// stanza with many declarations cannot make resolution quadratic.
#[derive(Debug, Default)]
struct NsScopes {
    /// Default-namespace declarations, innermost last.
    defaults: Vec<Namespace<'static>>,
    /// Prefix bindings, innermost last per prefix.
    prefixed: HashMap<NcName, Vec<Namespace<'static>>>,
    /// Every declaration in document order (`None` = default namespace), so
    /// an element's declarations can be undone when it ends.
    undo: Vec<Option<NcName>>,
    /// `undo.len()` when each currently open element started.
    marks: Vec<usize>,
}

impl NsScopes {
    fn open(&mut self) {
        self.marks.push(self.undo.len());
    }

    fn declare(&mut self, prefix: Option<NcName>, ns: Namespace<'static>) -> Result<(), StreamError> {
        let mark = self.marks.last().copied().unwrap_or(0);
        // Bounded by max_attributes, so the linear scan is cheap.
        if self.undo[mark..].contains(&prefix) {
            return Err(StreamError::NotWellFormed("duplicate namespace declaration".into()));
        }
        match &prefix {
            None => self.defaults.push(ns),
            Some(p) => self.prefixed.entry(p.clone()).or_default().push(ns),
        }
        self.undo.push(prefix);
        Ok(())
    }

    fn close(&mut self) {
        let mark = self.marks.pop().unwrap_or(0);
        for prefix in self.undo.drain(mark..) {
            match prefix {
                None => {
                    self.defaults.pop();
                }
                Some(p) => {
                    if let Some(stack) = self.prefixed.get_mut(&p) {
                        stack.pop();
                        // Drop empty entries so the map cannot grow without
                        // bound across stanzas.
                        if stack.is_empty() {
                            self.prefixed.remove(&p);
                        }
                    }
                }
            }
        }
    }

    fn resolve(&self, prefix: Option<&NcName>) -> Result<Namespace<'static>, StreamError> {
        match prefix {
            None => Ok(self.defaults.last().cloned().unwrap_or(Namespace::NONE)),
            // Bound by definition (Namespaces in XML 1.0 §3).
            Some(p) if p.as_str() == "xml" => Ok(Namespace::XML),
            Some(p) => self
                .prefixed
                .get(p)
                .and_then(|stack| stack.last())
                .cloned()
                .ok_or_else(|| StreamError::NotWellFormed(format!("undeclared namespace prefix {p:?}"))),
        }
    }
}

/// Incremental parser for one direction of an XMPP stream.
#[derive(Debug)]
pub struct StreamParser {
    limits: Limits,
    xml: RawParser,
    phase: Phase,
    /// Sticky error: once set, every call returns it.
    failed: Option<StreamError>,
    ns: NsScopes,
    /// Name of the element whose start tag is being read.
    head: Option<RawQName>,
    /// Its non-namespace attributes; resolved when the start tag ends
    /// because declarations may follow their use. Reused across elements.
    head_attrs: Vec<(RawQName, String)>,
    head_attr_count: usize,
    /// Open elements of the current stanza; `stack[0]` is the stanza.
    stack: Vec<Element>,
    in_stanza: bool,
    header_bytes: usize,
    stanza_bytes: usize,
    /// Bytes rxml consumed that no completed event has accounted for yet,
    /// i.e. what it holds in its buffers for the event in progress.
    unaccounted: usize,
}

/// Longest name or attribute value rxml buffers.
const MAX_TOKEN_BYTES: usize = 4096;

impl StreamParser {
    pub fn new(limits: Limits) -> Self {
        // Bound rxml's own buffering. rxml reserves its whole token buffer
        // up front for every parser, so a stanza-sized limit would cost each
        // idle connection pages of it; text longer than the limit is
        // delivered in chunks anyway, so it only caps names and attribute
        // values (a full JID is at most 3071 bytes, RFC 7622 §3.1).
        let max_token_length = limits.max_stanza_bytes.clamp(1, MAX_TOKEN_BYTES);
        let opts = rxml::Options { max_token_length, ..rxml::Options::default() };
        Self {
            xml: <RawParser as WithOptions>::with_options(opts),
            limits,
            phase: Phase::Header,
            failed: None,
            ns: NsScopes::default(),
            head: None,
            head_attrs: Vec::new(),
            head_attr_count: 0,
            stack: Vec::new(),
            in_stanza: false,
            header_bytes: 0,
            stanza_bytes: 0,
            unaccounted: 0,
        }
    }

    /// The limits this parser enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Whether `</stream:stream>` has been seen.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Feed bytes as they arrive; returns the events completed by them.
    /// Incomplete input is kept inside the parser until the next call.
    /// After an `Err` the parser is dead (every later call returns the same
    /// error) until [`reset`](Self::reset).
    pub fn feed(&mut self, data: &[u8]) -> Result<Vec<StreamEvent>, StreamError> {
        let mut out = Vec::new();
        self.feed_into(data, &mut out)?;
        Ok(out)
    }

    /// Like [`feed`](Self::feed) but appends events to `out`, so a caller
    /// can reuse one Vec. On error, `out` holds the events completed before
    /// the offending bytes.
    pub fn feed_into(&mut self, data: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), StreamError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let result = self.run(data, out);
        if let Err(err) = &result {
            self.failed = Some(err.clone());
        }
        result
    }

    /// Frees the buffers kept for the next event (rxml's token buffers,
    /// the attribute scratch list) so that a stream waiting for input holds
    /// only what a partial event needs. They are taken again when the next
    /// bytes arrive.
    pub fn release_buffers(&mut self) {
        self.xml.release_temporaries();
        self.head_attrs.shrink_to_fit();
        self.stack.shrink_to_fit();
    }

    /// Stream restart (after STARTTLS / SASL success, RFC 6120 §5.4.3.3 and
    /// §6.4.6): discard all state and expect a fresh header, optionally
    /// preceded by an XML declaration. Also clears a previous error.
    pub fn reset(&mut self) {
        *self = Self::new(self.limits.clone());
    }

    fn run(&mut self, data: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), StreamError> {
        let mut buf = data;
        // rxml returns one event per call and must be called until it asks
        // for more data; it consumes (and buffers) everything it is given.
        while self.phase != Phase::Closed {
            let before = buf.len();
            let result = self.xml.parse(&mut buf, false);
            self.unaccounted += before - buf.len();
            match result {
                Ok(Some(ev)) => {
                    let len = ev.metrics().len();
                    self.unaccounted = self.unaccounted.saturating_sub(len);
                    self.handle(ev, len, out)?;
                }
                Err(EndOrError::NeedMoreData) => return self.check_size(),
                Err(EndOrError::Error(e)) => return Err(map_rxml_error(e)),
                // Only reported at EOF, which we never signal: a stream
                // has no end other than </stream:stream>.
                Ok(None) => return Ok(()),
            }
        }
        // Bytes after </stream:stream> are ignored.
        Ok(())
    }

    /// Enforce the size limits on completed plus buffered bytes, so an
    /// endless stanza or header is cut off while it is still arriving.
    fn check_size(&self) -> Result<(), StreamError> {
        let (used, limit, what) = match self.phase {
            Phase::Header => (self.header_bytes, self.limits.max_header_bytes, "stream header too long"),
            Phase::Open if self.in_stanza => (self.stanza_bytes, self.limits.max_stanza_bytes, "stanza too large"),
            // Between stanzas the buffered bytes are the start of the next
            // one (or whitespace, which rxml flushes in bounded chunks).
            Phase::Open => (0, self.limits.max_stanza_bytes, "stanza too large"),
            Phase::Closed => return Ok(()),
        };
        if used.saturating_add(self.unaccounted) > limit {
            return Err(StreamError::PolicyViolation(what.into()));
        }
        Ok(())
    }

    /// Account an event's bytes to the header or current stanza, checking
    /// the limit before the event can complete either.
    fn add_bytes(&mut self, len: usize) -> Result<(), StreamError> {
        match self.phase {
            Phase::Header => self.header_bytes += len,
            Phase::Open if self.in_stanza => self.stanza_bytes += len,
            _ => {}
        }
        self.check_size()
    }

    fn handle(&mut self, ev: RawEvent, len: usize, out: &mut Vec<StreamEvent>) -> Result<(), StreamError> {
        match ev {
            RawEvent::XmlDeclaration(..) => self.add_bytes(len)?,
            RawEvent::ElementHeadOpen(_, name) => {
                if self.phase == Phase::Open {
                    if self.stack.is_empty() {
                        self.in_stanza = true;
                        self.stanza_bytes = 0;
                    }
                    // Checked before anything is built for this element.
                    if self.stack.len() >= self.limits.max_depth {
                        return Err(StreamError::PolicyViolation("stanza nested too deeply".into()));
                    }
                }
                self.add_bytes(len)?;
                self.ns.open();
                self.head = Some(name);
                self.head_attr_count = 0;
            }
            RawEvent::Attribute(_, (prefix, local), value) => {
                self.add_bytes(len)?;
                self.head_attr_count += 1;
                if self.head_attr_count > self.limits.max_attributes {
                    return Err(StreamError::PolicyViolation("too many attributes".into()));
                }
                match prefix {
                    None if local.as_str() == "xmlns" => self.ns.declare(None, ns_from(value))?,
                    Some(p) if p.as_str() == "xmlns" => self.ns.declare(Some(local), ns_from(value))?,
                    prefix => self.head_attrs.push(((prefix, local), value)),
                }
            }
            RawEvent::ElementHeadClose(_) => {
                self.add_bytes(len)?;
                self.finish_head(out)?;
            }
            RawEvent::ElementFoot(_) => {
                self.add_bytes(len)?;
                self.ns.close();
                match self.stack.pop() {
                    Some(el) => match self.stack.last_mut() {
                        Some(parent) => {
                            parent.append_child(el);
                        }
                        None => {
                            self.in_stanza = false;
                            out.push(StreamEvent::Stanza(el));
                        }
                    },
                    None => {
                        self.phase = Phase::Closed;
                        out.push(StreamEvent::Close);
                    }
                }
            }
            RawEvent::Text(_, text) => {
                self.add_bytes(len)?;
                match self.stack.last_mut() {
                    // append_text merges the chunks rxml may split text into.
                    Some(el) => el.append_text(text),
                    // RFC 6120 Appendix A.1: stream:stream has element-only
                    // content; whitespace there is allowed (keepalives,
                    // §4.6.1), other text is invalid content, not an XML
                    // syntax error, hence invalid-xml (§4.9.3.13).
                    None if is_xml_whitespace(&text) => {}
                    None => {
                        return Err(StreamError::InvalidXml("character data directly under the stream root".into()))
                    }
                }
            }
        }
        Ok(())
    }

    /// The start tag is complete: resolve names and start the element (or
    /// open the stream for the root).
    fn finish_head(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), StreamError> {
        let (prefix, local) =
            self.head.take().ok_or_else(|| StreamError::NotWellFormed("start tag without name".into()))?;
        let mut attrs = AttrMap::new();
        for ((aprefix, alocal), value) in self.head_attrs.drain(..) {
            // Unprefixed attributes are in no namespace, not the default.
            let ns = match &aprefix {
                None => Namespace::NONE,
                Some(p) => self.ns.resolve(Some(p))?,
            };
            match attrs.entry(ns, alocal) {
                Entry::Occupied(_) => return Err(StreamError::NotWellFormed("duplicate attribute".into())),
                Entry::Vacant(slot) => {
                    slot.insert(value);
                }
            }
        }
        let ns = self.ns.resolve(prefix.as_ref())?;

        if self.phase == Phase::Header {
            return self.open_stream(prefix.is_some(), &local, &ns, attrs, out);
        }
        let mut el = Element::bare(local.as_str(), ns.as_str());
        *el.attrs_mut() = attrs;
        self.stack.push(el);
        Ok(())
    }

    fn open_stream(
        &mut self,
        prefixed: bool,
        local: &NcName,
        ns: &Namespace<'static>,
        attrs: AttrMap,
        out: &mut Vec<StreamEvent>,
    ) -> Result<(), StreamError> {
        if ns.as_str() != NS_STREAMS || local.as_str() != "stream" {
            return Err(StreamError::InvalidNamespace);
        }
        // RFC 6120 §4.9.3.2: the stream element itself must be prefixed.
        if !prefixed {
            return Err(StreamError::BadNamespacePrefix);
        }
        let mut header =
            StreamHeader { content_ns: self.ns.resolve(None)?.as_str().to_owned(), ..StreamHeader::default() };
        for ((ans, name), value) in attrs {
            let slot = if ans.is_none() {
                match name.as_str() {
                    "to" => &mut header.to,
                    "from" => &mut header.from,
                    "id" => &mut header.id,
                    "version" => &mut header.version,
                    _ => continue,
                }
            } else if ans.as_str() == rxml::XMLNS_XML && name.as_str() == "lang" {
                &mut header.lang
            } else {
                continue;
            };
            *slot = Some(value);
        }
        self.phase = Phase::Open;
        out.push(StreamEvent::Open(header));
        Ok(())
    }
}

/// Namespace name from an `xmlns` attribute value; the well-known ones
/// (including "" for undeclaring the default) avoid an allocation.
fn ns_from(value: String) -> Namespace<'static> {
    Namespace::try_share_static(&value).unwrap_or_else(|| Namespace::from(value))
}

/// XML's S production (space, tab, CR, LF).
fn is_xml_whitespace(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
}

/// Map an rxml error onto the stream error condition (RFC 6120 §4.9.3).
fn map_rxml_error(e: rxml::Error) -> StreamError {
    use rxml::Error as E;
    match e {
        E::RestrictedXml("only utf-8 encoding is allowed") => StreamError::UnsupportedEncoding,
        // rxml's token limit (MAX_TOKEN_BYTES) and length overflow.
        E::RestrictedXml("long name or reference") | E::RestrictedXml("event too long") => {
            StreamError::PolicyViolation("token too large".into())
        }
        // Comments, processing instructions, non-1.0 XML, standalone='no'.
        E::RestrictedXml(_) => StreamError::RestrictedXml(e.to_string()),
        // Only the five predefined entities exist without a DTD (§11.1).
        E::UndeclaredEntity => StreamError::RestrictedXml(e.to_string()),
        // `<!` not followed by `--` or `[CDATA[`: a markup declaration
        // (DOCTYPE, ENTITY, ELEMENT, ATTLIST, NOTATION), i.e. a DTD.
        E::InvalidSyntax("malformed cdata or comment section start") => {
            StreamError::RestrictedXml("document type declaration".into())
        }
        _ => StreamError::NotWellFormed(e.to_string()),
    }
}

#[cfg(test)]
mod tests;
