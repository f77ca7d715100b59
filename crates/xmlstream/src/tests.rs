use super::*;

fn set(el: &mut Element, name: &str, value: &str) {
    el.attrs_mut().insert(Namespace::NONE, name.try_into().unwrap(), value.to_owned());
}

const HEADER: &str = "<?xml version='1.0'?><stream:stream to='example.com' \
    xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' \
    version='1.0' xml:lang='en'>";

fn client_stream() -> String {
    format!(
        "{HEADER}\n  <starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/> \n\
         <iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
         <resource>balcony</resource></bind></iq>\t\n \
         <message to='juliet@example.com' type='chat' xml:lang='en'>\
         <body>Wherefore art thou, Romeo? &amp; &lt;3 &#x263A; ünïcødé 🎭</body>\
         <x:thing xmlns:x='urn:x' x:attr='1' plain=\"2\">a<![CDATA[<b>&]]>c\
         <x:inner><deep xmlns='urn:y'>text</deep></x:inner></x:thing></message>\
         <stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>\
         <mechanism>PLAIN</mechanism></mechanisms></stream:features>\
         </stream:stream>"
    )
}

fn parse_all(data: &[u8]) -> Result<Vec<StreamEvent>, StreamError> {
    StreamParser::new(Limits::default()).feed(data)
}

fn parse_chunks<'a>(
    parser: &mut StreamParser,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<StreamEvent>, StreamError> {
    let mut out = Vec::new();
    for chunk in chunks {
        parser.feed_into(chunk, &mut out)?;
    }
    Ok(out)
}

fn err_of(data: &[u8]) -> StreamError {
    parse_all(data).expect_err("expected a stream error")
}

fn stanza(xml: &str) -> Element {
    let events = parse_all(format!("{HEADER}{xml}").as_bytes()).unwrap();
    match events.into_iter().nth(1) {
        Some(StreamEvent::Stanza(el)) => el,
        other => panic!("expected stanza, got {other:?}"),
    }
}

fn expected_client_events() -> Vec<StreamEvent> {
    let header = StreamHeader {
        to: Some("example.com".into()),
        from: None,
        id: None,
        version: Some("1.0".into()),
        lang: Some("en".into()),
        content_ns: "jabber:client".into(),
    };

    let starttls = Element::bare("starttls", "urn:ietf:params:xml:ns:xmpp-tls");

    let mut iq = Element::bare("iq", "jabber:client");
    set(&mut iq, "type", "set");
    set(&mut iq, "id", "b1");
    let mut bind = Element::bare("bind", "urn:ietf:params:xml:ns:xmpp-bind");
    let mut resource = Element::bare("resource", "urn:ietf:params:xml:ns:xmpp-bind");
    resource.append_text_node("balcony");
    bind.append_child(resource);
    iq.append_child(bind);

    let mut msg = Element::bare("message", "jabber:client");
    set(&mut msg, "to", "juliet@example.com");
    set(&mut msg, "type", "chat");
    msg.attrs_mut().insert(Namespace::XML, "lang".try_into().unwrap(), "en".to_owned());
    let mut body = Element::bare("body", "jabber:client");
    body.append_text_node("Wherefore art thou, Romeo? & <3 ☺ ünïcødé 🎭");
    msg.append_child(body);
    let mut thing = Element::bare("thing", "urn:x");
    thing.attrs_mut().insert(Namespace::from("urn:x".to_owned()), "attr".try_into().unwrap(), "1".to_owned());
    set(&mut thing, "plain", "2");
    thing.append_text_node("a<b>&c");
    let mut inner = Element::bare("inner", "urn:x");
    let mut deep = Element::bare("deep", "urn:y");
    deep.append_text_node("text");
    inner.append_child(deep);
    thing.append_child(inner);
    msg.append_child(thing);

    let mut features = Element::bare("features", NS_STREAMS);
    let mut mechs = Element::bare("mechanisms", "urn:ietf:params:xml:ns:xmpp-sasl");
    let mut mech = Element::bare("mechanism", "urn:ietf:params:xml:ns:xmpp-sasl");
    mech.append_text_node("PLAIN");
    mechs.append_child(mech);
    features.append_child(mechs);

    vec![
        StreamEvent::Open(header),
        StreamEvent::Stanza(starttls),
        StreamEvent::Stanza(iq),
        StreamEvent::Stanza(msg),
        StreamEvent::Stanza(features),
        StreamEvent::Close,
    ]
}

#[test]
fn typical_client_stream_in_one_feed() {
    let data = client_stream();
    let mut p = StreamParser::new(Limits::default());
    let events = p.feed(data.as_bytes()).unwrap();
    assert_eq!(events, expected_client_events());
    assert!(p.is_closed());
}

#[test]
fn every_split_point_gives_identical_events() {
    let data = client_stream();
    let data = data.as_bytes();
    let expected = expected_client_events();
    for split in 0..=data.len() {
        let mut p = StreamParser::new(Limits::default());
        let (a, b) = data.split_at(split);
        let events = parse_chunks(&mut p, [a, b]).unwrap();
        assert_eq!(events, expected, "split at {split}");
    }
}

#[test]
fn byte_by_byte_gives_identical_events() {
    let data = client_stream();
    let mut p = StreamParser::new(Limits::default());
    let events = parse_chunks(&mut p, data.as_bytes().chunks(1)).unwrap();
    assert_eq!(events, expected_client_events());
}

#[test]
fn events_arrive_as_soon_as_complete() {
    let mut p = StreamParser::new(Limits::default());
    let ev = p.feed(HEADER.as_bytes()).unwrap();
    assert!(matches!(&ev[..], [StreamEvent::Open(_)]));
    assert!(p.feed(b"<presence").unwrap().is_empty());
    assert!(p.feed(b"/").unwrap().is_empty());
    let ev = p.feed(b">").unwrap();
    assert_eq!(ev, vec![StreamEvent::Stanza(Element::bare("presence", "jabber:client"))]);
    // All consumed bytes are attributed to completed events.
    assert_eq!(p.unaccounted, 0);
}

#[test]
fn header_fields_are_read() {
    let ev = parse_all(
        b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams' \
          xmlns='jabber:server' from='a.example' to='b.example' id='s&amp;1' \
          version='1.0' xml:lang='de' other='x' xmlns:db='jabber:server:dialback'>",
    )
    .unwrap();
    assert_eq!(
        ev,
        vec![StreamEvent::Open(StreamHeader {
            to: Some("b.example".into()),
            from: Some("a.example".into()),
            id: Some("s&1".into()),
            version: Some("1.0".into()),
            lang: Some("de".into()),
            content_ns: "jabber:server".into(),
        })]
    );
}

#[test]
fn header_without_content_namespace() {
    let ev = parse_all(b"<s:stream xmlns:s='http://etherx.jabber.org/streams'>").unwrap();
    assert_eq!(ev, vec![StreamEvent::Open(StreamHeader::default())]);
}

#[test]
fn nested_children_with_prefixes_and_text() {
    let el = stanza(
        "<iq type='get' xmlns:p='urn:p'><p:query xmlns:q='urn:q' q:a='1' b='2'>\
         before<q:item>one</q:item>mid<item xmlns='urn:d'><sub/></item>after\
         </p:query></iq>",
    );
    assert!(el.is("iq", "jabber:client"));
    let query = el.get_child("query", "urn:p").unwrap();
    assert_eq!(query.attr_ns("urn:q", "a"), Some("1"));
    assert_eq!(query.attr("b"), Some("2"));
    assert_eq!(query.text(), "beforemidafter");
    let items: Vec<_> = query.children().collect();
    assert_eq!(items.len(), 2);
    assert!(items[0].is("item", "urn:q"));
    assert_eq!(items[0].text(), "one");
    assert!(items[1].is("item", "urn:d"));
    assert!(items[1].get_child("sub", "urn:d").is_some());
}

#[test]
fn stream_prefix_elements_and_default_undeclaration() {
    let el = stanza(
        "<stream:error><not-well-formed xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
         <x xmlns=''/></stream:error>",
    );
    assert!(el.is("error", NS_STREAMS));
    assert!(el.get_child("not-well-formed", "urn:ietf:params:xml:ns:xmpp-streams").is_some());
    assert!(el.get_child("x", "").is_some());
}

#[test]
fn whitespace_keepalives_are_ignored() {
    let mut p = StreamParser::new(Limits::default());
    let mut events = p.feed(HEADER.as_bytes()).unwrap();
    for chunk in [&b" "[..], b"\n", b"\r\n\t ", b"<presence/>", b"   ", b" ", b"<presence/>\n"] {
        events.extend(p.feed(chunk).unwrap());
    }
    let presence = StreamEvent::Stanza(Element::bare("presence", "jabber:client"));
    assert_eq!(events.len(), 3);
    assert_eq!(events[1], presence);
    assert_eq!(events[2], presence);
    // Endless keepalives do not count towards any limit.
    let spaces = vec![b' '; 64 * 1024];
    for _ in 0..16 {
        assert!(p.feed(&spaces).unwrap().is_empty());
    }
}

#[test]
fn text_under_root_is_invalid_xml() {
    let e = err_of(format!("{HEADER}<presence/>hello<presence/>").as_bytes());
    assert_eq!(e.condition(), "invalid-xml");
}

#[test]
fn restart_via_reset() {
    let mut p = StreamParser::new(Limits::default());
    let ev = p.feed(format!("{HEADER}<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>").as_bytes()).unwrap();
    assert_eq!(ev.len(), 2);
    p.reset();
    // A new header with XML declaration is accepted on the same parser.
    let ev = p.feed(format!("{HEADER}<presence/></stream:stream>").as_bytes()).unwrap();
    assert!(matches!(&ev[..], [StreamEvent::Open(_), StreamEvent::Stanza(_), StreamEvent::Close]));
    // Reset also works mid-stanza and after errors.
    p.reset();
    p.feed(format!("{HEADER}<message><bo").as_bytes()).unwrap();
    p.reset();
    assert!(p.feed(b"<garbage/>").is_err());
    p.reset();
    let ev = p.feed(HEADER.as_bytes()).unwrap();
    assert!(matches!(&ev[..], [StreamEvent::Open(_)]));
}

#[test]
fn errors_are_sticky() {
    let mut p = StreamParser::new(Limits::default());
    p.feed(HEADER.as_bytes()).unwrap();
    let e = p.feed(b"<a></b>").unwrap_err();
    assert_eq!(p.feed(b"<presence/>").unwrap_err(), e);
    assert_eq!(p.feed(b"").unwrap_err(), e);
}

#[test]
fn events_before_error_are_kept_by_feed_into() {
    let mut p = StreamParser::new(Limits::default());
    let mut out = Vec::new();
    let e = p.feed_into(format!("{HEADER}<presence/><a></b>").as_bytes(), &mut out).unwrap_err();
    assert_eq!(e.condition(), "not-well-formed");
    assert_eq!(out.len(), 2);
}

#[test]
fn bytes_after_close_are_ignored() {
    let mut p = StreamParser::new(Limits::default());
    let ev = p.feed(format!("{HEADER}</stream:stream><garbage & more").as_bytes()).unwrap();
    assert_eq!(ev.last(), Some(&StreamEvent::Close));
    assert!(p.feed(b"\xff\xfe more garbage").unwrap().is_empty());
}

#[test]
fn doctype_is_restricted() {
    let e = err_of(b"<?xml version='1.0'?><!DOCTYPE stream>");
    assert_eq!(e.condition(), "restricted-xml", "{e}");
    let e = err_of(format!("{HEADER}<!DOCTYPE x>").as_bytes());
    assert_eq!(e.condition(), "restricted-xml", "{e}");
}

#[test]
fn entity_declaration_and_undeclared_entity_are_restricted() {
    let e = err_of(b"<!ENTITY lol 'lol'>");
    assert_eq!(e.condition(), "restricted-xml", "{e}");
    let e = err_of(format!("{HEADER}<message><!ENTITY x 'y'></message>").as_bytes());
    assert_eq!(e.condition(), "restricted-xml", "{e}");
    let e = err_of(format!("{HEADER}<message><body>&foo;</body></message>").as_bytes());
    assert_eq!(e.condition(), "restricted-xml", "{e}");
    let e = err_of(format!("{HEADER}<message to='&foo;'/>").as_bytes());
    assert_eq!(e.condition(), "restricted-xml", "{e}");
}

#[test]
fn processing_instruction_is_restricted() {
    // (`<?xml-stylesheet ...?>` is reported by rxml as a malformed XML
    // declaration, hence not-well-formed; not worth special-casing.)
    let e = err_of(b"<?target data?>");
    assert_eq!(e.condition(), "restricted-xml", "{e}");
    let e = err_of(format!("{HEADER}<?php echo 1; ?>").as_bytes());
    assert_eq!(e.condition(), "restricted-xml", "{e}");
    let e = err_of(format!("{HEADER}<message><?pi x?></message>").as_bytes());
    assert_eq!(e.condition(), "restricted-xml", "{e}");
}

#[test]
fn comment_is_restricted() {
    let e = err_of(format!("{HEADER}<message><!-- hi --></message>").as_bytes());
    assert_eq!(e.condition(), "restricted-xml", "{e}");
    let e = err_of(format!("{HEADER}<!-- hi -->").as_bytes());
    assert_eq!(e.condition(), "restricted-xml", "{e}");
}

#[test]
fn bad_utf8_is_not_well_formed() {
    let mut data = format!("{HEADER}<message><body>").into_bytes();
    data.extend_from_slice(b"a\xff\xfeb</body></message>");
    assert_eq!(err_of(&data).condition(), "not-well-formed");
    // Truncated multi-byte sequence followed by ASCII, fed in pieces.
    let mut p = StreamParser::new(Limits::default());
    p.feed(format!("{HEADER}<message><body>").as_bytes()).unwrap();
    let r = p.feed(b"\xe2\x82").and_then(|_| p.feed(b"x</body></message>"));
    assert_eq!(r.unwrap_err().condition(), "not-well-formed");
    // Bad UTF-8 in a name.
    let mut data = format!("{HEADER}<mess").into_bytes();
    data.extend_from_slice(b"\xc3\x28age/>");
    assert_eq!(err_of(&data).condition(), "not-well-formed");
}

#[test]
fn mismatched_end_tag_is_not_well_formed() {
    let e = err_of(format!("{HEADER}<message><body></message></body>").as_bytes());
    assert_eq!(e.condition(), "not-well-formed");
    let e = err_of(format!("{HEADER}</stream:other>").as_bytes());
    assert_eq!(e.condition(), "not-well-formed");
}

#[test]
fn other_not_well_formed_cases() {
    for bad in [
        "<message><x:y/></message>",                                  // undeclared prefix
        "<message p:a='1'/>",                                         // undeclared attribute prefix
        "<message a='1' a='2'/>",                                     // duplicate attribute
        "<message xmlns:a='urn:z' xmlns:b='urn:z' a:x='1' b:x='2'/>", // same after resolution
        "<message xmlns='a' xmlns='b'/>",                             // duplicate default declaration
        "<message><body>a < b</body></message>",
        "<message to=unquoted/>",
        "<1message/>",
        "<message>\u{1}</message>",
    ] {
        let e = err_of(format!("{HEADER}{bad}").as_bytes());
        assert_eq!(e.condition(), "not-well-formed", "{bad}: {e}");
    }
}

#[test]
fn wrong_root_namespace_is_invalid_namespace() {
    for bad in [
        "<stream:stream xmlns:stream='http://example.com/streams' xmlns='jabber:client'>",
        "<stream xmlns='jabber:client'>",
        "<stream:other xmlns:stream='http://etherx.jabber.org/streams'>",
        "<html>",
    ] {
        assert_eq!(err_of(bad.as_bytes()), StreamError::InvalidNamespace, "{bad}");
    }
}

#[test]
fn unprefixed_stream_root_is_bad_namespace_prefix() {
    let e = err_of(b"<stream xmlns='http://etherx.jabber.org/streams'>");
    assert_eq!(e, StreamError::BadNamespacePrefix);
    assert_eq!(e.condition(), "bad-namespace-prefix");
    // Any prefix is fine.
    assert!(parse_all(b"<s:stream xmlns:s='http://etherx.jabber.org/streams'>").is_ok());
}

#[test]
fn non_utf8_encoding_is_unsupported_encoding() {
    let e = err_of(b"<?xml version='1.0' encoding='ISO-8859-1'?><stream:stream>");
    assert_eq!(e, StreamError::UnsupportedEncoding);
    assert!(parse_all(
        format!("<?xml version='1.0' encoding='UTF-8'?>{}", HEADER.trim_start_matches("<?xml version='1.0'?>"))
            .as_bytes()
    )
    .is_ok());
}

#[test]
fn oversized_stanza_fails_before_it_ends() {
    let mut p = StreamParser::new(Limits::default());
    p.feed(HEADER.as_bytes()).unwrap();
    p.feed(b"<message><body>").unwrap();
    let chunk = vec![b'a'; 4096];
    let mut fed = 0usize;
    let mut result = Ok(Vec::new());
    // 300 KiB of body text, never closed.
    for _ in 0..75 {
        result = p.feed(&chunk);
        fed += chunk.len();
        if result.is_err() {
            break;
        }
    }
    let e = result.expect_err("stanza over the limit must fail");
    assert_eq!(e.condition(), "policy-violation");
    // Cut off within one chunk of the limit, not at the end of the stanza.
    assert!(fed <= 256 * 1024 + 4096, "failed only after {fed} bytes");
}

#[test]
fn oversized_attribute_and_name_fail() {
    let mut p = StreamParser::new(Limits::default());
    p.feed(HEADER.as_bytes()).unwrap();
    p.feed(b"<message to='").unwrap();
    let chunk = vec![b'a'; 4096];
    let e = (0..100).find_map(|_| p.feed(&chunk).err()).expect("attribute over the limit must fail");
    assert_eq!(e.condition(), "policy-violation");

    let mut p = StreamParser::new(Limits::default());
    p.feed(HEADER.as_bytes()).unwrap();
    p.feed(b"<m").unwrap();
    let e = (0..100).find_map(|_| p.feed(&chunk).err()).expect("name over the limit must fail");
    assert_eq!(e.condition(), "policy-violation");

    // Many small attributes in one start tag are cut off by count.
    let mut p = StreamParser::new(Limits::default());
    p.feed(HEADER.as_bytes()).unwrap();
    p.feed(b"<message").unwrap();
    let e = (0..1000).find_map(|i| p.feed(format!(" a{i}='x'").as_bytes()).err()).unwrap();
    assert_eq!(e.condition(), "policy-violation");
}

#[test]
fn stanza_limit_counts_wire_bytes() {
    let limits = Limits { max_stanza_bytes: 100, ..Limits::default() };
    let frame = "<message><body></body></message>".len();
    let ok = format!("<message><body>{}</body></message>", "x".repeat(100 - frame));
    assert_eq!(ok.len(), 100);
    let mut p = StreamParser::new(limits.clone());
    let ev = p.feed(format!("{HEADER}{ok}{ok}").as_bytes()).unwrap();
    assert_eq!(ev.len(), 3);
    let big = format!("<message><body>{}</body></message>", "x".repeat(101 - frame));
    let e = StreamParser::new(limits).feed(format!("{HEADER}{big}").as_bytes()).unwrap_err();
    assert_eq!(e.condition(), "policy-violation");
}

#[test]
fn header_limit() {
    let long_to = "a".repeat(5000);
    let e = err_of(format!("<stream:stream xmlns:stream='{NS_STREAMS}' to='{long_to}'>").as_bytes());
    assert_eq!(e.condition(), "policy-violation");
    // A header that never completes is cut off too.
    let mut p = StreamParser::new(Limits::default());
    p.feed(b"<stream:stream").unwrap();
    let e = (0..100).find_map(|i| p.feed(format!(" a{i}='{}'", "x".repeat(50)).as_bytes()).err()).unwrap();
    assert_eq!(e.condition(), "policy-violation");
}

fn nested(depth: usize) -> String {
    let mut s = String::new();
    for _ in 0..depth {
        s.push_str("<a>");
    }
    for _ in 0..depth {
        s.push_str("</a>");
    }
    s
}

#[test]
fn depth_limit() {
    let ok = parse_all(format!("{HEADER}{}", nested(32)).as_bytes()).unwrap();
    assert_eq!(ok.len(), 2);
    let e = err_of(format!("{HEADER}{}", nested(33)).as_bytes());
    assert_eq!(e.condition(), "policy-violation");
}

#[test]
fn attribute_limit() {
    let attrs = |n: usize| (0..n).map(|i| format!(" a{i}='v'")).collect::<String>();
    let ok = parse_all(format!("{HEADER}<message{}/>", attrs(64)).as_bytes()).unwrap();
    assert_eq!(ok.len(), 2);
    let e = err_of(format!("{HEADER}<message{}/>", attrs(65)).as_bytes());
    assert_eq!(e.condition(), "policy-violation");
    // Namespace declarations count as attributes.
    let decls = (0..65).map(|i| format!(" xmlns:p{i}='urn:{i}'")).collect::<String>();
    let e = err_of(format!("{HEADER}<message{decls}/>").as_bytes());
    assert_eq!(e.condition(), "policy-violation");
}

#[test]
fn unicode_text() {
    let text = "Grüße, Привет, こんにちは, مرحبا, 👩‍🚀 \u{10FFFD}";
    let el = stanza(&format!("<message><body>{text}</body></message>"));
    assert_eq!(el.get_child("body", "jabber:client").unwrap().text(), text);
    // Byte-by-byte (multi-byte characters split across feeds).
    let data = format!("{HEADER}<message><body>{text}</body></message>");
    let mut p = StreamParser::new(Limits::default());
    let ev = parse_chunks(&mut p, data.as_bytes().chunks(1)).unwrap();
    assert_eq!(ev[1], StreamEvent::Stanza(el));
}

/// Wrap serialised stanzas in a stream and parse them again.
fn reparse(content_ns: &str, stanzas: &[Element]) -> Vec<Element> {
    let mut data = stream_header(content_ns, "example.com", Some("x@y"), "id1").into_bytes();
    for el in stanzas {
        data.extend_from_slice(&to_bytes(el));
    }
    let mut p = StreamParser::new(Limits::default());
    p.feed(&data)
        .unwrap()
        .into_iter()
        .filter_map(|ev| match ev {
            StreamEvent::Stanza(el) => Some(el),
            _ => None,
        })
        .collect()
}

#[test]
fn to_bytes_round_trip() {
    let stanzas: Vec<Element> = expected_client_events()
        .into_iter()
        .filter_map(|ev| match ev {
            StreamEvent::Stanza(el) => Some(el),
            _ => None,
        })
        .collect();
    assert_eq!(reparse("jabber:client", &stanzas), stanzas);
    // Also when the stream's content namespace differs from the stanzas'.
    assert_eq!(reparse("jabber:server", &stanzas), stanzas);

    let mut tricky = Element::bare("message", "jabber:client");
    set(&mut tricky, "id", "'\"<&>\t\n\r");
    tricky.append_text_node("  a\r\nb ]]> c\t&amp;  ");
    tricky.append_child(Element::bare("none", ""));
    assert_eq!(reparse("jabber:client", &[tricky.clone()]), vec![tricky]);
}

#[test]
fn stream_header_round_trips_through_parser() {
    let from = "ex'am\"ple<&>.com";
    let ev = parse_all(stream_header("jabber:client", from, Some("u@h/r"), "i'd").as_bytes()).unwrap();
    assert_eq!(
        ev,
        vec![StreamEvent::Open(StreamHeader {
            to: Some("u@h/r".into()),
            from: Some(from.into()),
            id: Some("i'd".into()),
            version: Some("1.0".into()),
            lang: Some("en".into()),
            content_ns: "jabber:client".into(),
        })]
    );
}

#[test]
fn conditions() {
    let cases = [
        (StreamError::NotWellFormed(String::new()), "not-well-formed"),
        (StreamError::RestrictedXml(String::new()), "restricted-xml"),
        (StreamError::InvalidNamespace, "invalid-namespace"),
        (StreamError::BadNamespacePrefix, "bad-namespace-prefix"),
        (StreamError::PolicyViolation(String::new()), "policy-violation"),
        (StreamError::UnsupportedStanzaType, "unsupported-stanza-type"),
        (StreamError::InvalidXml(String::new()), "invalid-xml"),
        (StreamError::UnsupportedEncoding, "unsupported-encoding"),
    ];
    for (e, cond) in cases {
        assert_eq!(e.condition(), cond);
        assert!(e.to_string().starts_with(cond));
    }
}

/// Deterministic xorshift64* generator; avoids a proptest dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_input_never_panics() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let valid = client_stream().into_bytes();
    let tokens: [&[u8]; 16] = [
        b"<",
        b">",
        b"/>",
        b"</",
        b"'",
        b"\"",
        b"&",
        b";",
        b"xmlns",
        b":",
        b"=",
        b"<![CDATA[",
        b"]]>",
        b"<?",
        b"<!",
        b"\xf0\x9f",
    ];
    let limits = Limits { max_stanza_bytes: 512, max_depth: 4, max_attributes: 4, max_header_bytes: 300 };
    for round in 0..20_000 {
        let data: Vec<u8> = match round % 3 {
            // Pure noise, biased towards XML-ish bytes.
            0 => (0..rng.below(300))
                .map(|_| match rng.below(4) {
                    0 => b"<>/='\"&;: ab"[rng.below(12)],
                    _ => rng.next() as u8,
                })
                .collect(),
            // A valid stream with random byte mutations.
            1 => {
                let mut d = valid.clone();
                for _ in 0..1 + rng.below(4) {
                    let i = rng.below(d.len());
                    d[i] = rng.next() as u8;
                }
                d
            }
            // A valid header followed by random XML tokens.
            _ => {
                let mut d = HEADER.as_bytes().to_vec();
                for _ in 0..rng.below(80) {
                    if rng.below(3) == 0 {
                        d.extend_from_slice(b"a");
                    } else {
                        d.extend_from_slice(tokens[rng.below(tokens.len())]);
                    }
                }
                d
            }
        };
        let l = if round % 2 == 0 { limits.clone() } else { Limits::default() };
        let mut p = StreamParser::new(l);
        let mut rest = &data[..];
        let mut failed = None;
        while !rest.is_empty() {
            let n = 1 + rng.below(rest.len().min(64));
            let (chunk, tail) = rest.split_at(n);
            rest = tail;
            match p.feed(chunk) {
                Ok(_) => {}
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = failed {
            assert_eq!(p.feed(b"<x/>").unwrap_err(), e);
        }
    }
}

#[test]
fn long_text_is_whole_but_long_attribute_values_are_refused() {
    // Text beyond rxml's token buffer arrives in chunks and is joined.
    let body = "x".repeat(100_000);
    let el = stanza(&format!("<message><body>{body}</body></message>"));
    assert_eq!(el.get_child("body", "jabber:client").unwrap().text(), body);
    // A name or attribute value longer than any JID is a policy violation.
    let attr = "a".repeat(5000);
    let err = err_of(format!("{HEADER}<message to='{attr}'/>").as_bytes());
    assert!(matches!(err, StreamError::PolicyViolation(_)), "{err:?}");
}
