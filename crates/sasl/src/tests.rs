//! Session-level tests: RFC vectors, an independent client, and interop with
//! the xmpp-rs `sasl` client crate.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Digest;

use crate::*;

// ---- Independent client-side SCRAM (RFC 5802 §3), deliberately not using
// ---- the crate's own helpers so a shared bug can't cancel out.

macro_rules! per_hash {
    ($alg:expr, $d:ident => $body:expr) => {
        match $alg {
            HashAlg::Sha1 => {
                type $d = sha1::Sha1;
                $body
            }
            HashAlg::Sha256 => {
                type $d = sha2::Sha256;
                $body
            }
            HashAlg::Sha512 => {
                type $d = sha2::Sha512;
                $body
            }
        }
    };
}

fn t_hmac(alg: HashAlg, key: &[u8], data: &[u8]) -> Vec<u8> {
    per_hash!(alg, D => {
        let mut m = <Hmac<D> as Mac>::new_from_slice(key).unwrap();
        m.update(data);
        m.finalize().into_bytes().to_vec()
    })
}

fn t_hash(alg: HashAlg, data: &[u8]) -> Vec<u8> {
    per_hash!(alg, D => D::digest(data).to_vec())
}

fn t_hi(alg: HashAlg, pw: &[u8], salt: &[u8], i: u32) -> Vec<u8> {
    per_hash!(alg, D => {
        let mut out = vec![0u8; <D as Digest>::output_size()];
        pbkdf2::pbkdf2_hmac::<D>(pw, salt, i, &mut out);
        out
    })
}

struct TestClient {
    alg: HashAlg,
    password: String,
    gs2: String,
    cb_data: Vec<u8>,
    bare: String,
    /// Expected server-final, filled in by `final_msg`.
    expected_v: Vec<u8>,
}

impl TestClient {
    /// `user` is put on the wire as given (caller escapes).
    fn new(alg: HashAlg, user: &str, password: &str, nonce: &str, gs2: &str, cb: &[u8]) -> Self {
        TestClient {
            alg,
            password: password.to_owned(),
            gs2: gs2.to_owned(),
            cb_data: cb.to_vec(),
            bare: format!("n={user},r={nonce}"),
            expected_v: Vec::new(),
        }
    }

    fn simple(alg: HashAlg, user: &str, password: &str) -> Self {
        Self::new(alg, user, password, "cl1entN0nce+/", "n,,", b"")
    }

    fn first(&self) -> Vec<u8> {
        format!("{}{}", self.gs2, self.bare).into_bytes()
    }

    fn final_msg(&mut self, server_first: &[u8]) -> Vec<u8> {
        let sf = std::str::from_utf8(server_first).unwrap();
        let mut r = None;
        let mut s = None;
        let mut i = None;
        for attr in sf.split(',') {
            let (k, v) = attr.split_once('=').unwrap();
            match k {
                "r" => r = Some(v.to_owned()),
                "s" => s = Some(B64.decode(v).unwrap()),
                "i" => i = Some(v.parse::<u32>().unwrap()),
                _ => {}
            }
        }
        let (r, s, i) = (r.unwrap(), s.unwrap(), i.unwrap());
        let mut cbind = self.gs2.as_bytes().to_vec();
        cbind.extend_from_slice(&self.cb_data);
        let without_proof = format!("c={},r={}", B64.encode(&cbind), r);
        let auth = format!("{},{},{}", self.bare, sf, without_proof);
        let salted = t_hi(self.alg, self.password.as_bytes(), &s, i);
        let client_key = t_hmac(self.alg, &salted, b"Client Key");
        let stored_key = t_hash(self.alg, &client_key);
        let sig = t_hmac(self.alg, &stored_key, auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
        let server_key = t_hmac(self.alg, &salted, b"Server Key");
        self.expected_v = format!("v={}", B64.encode(t_hmac(self.alg, &server_key, auth.as_bytes()))).into_bytes();
        format!("{},p={}", without_proof, B64.encode(proof)).into_bytes()
    }
}

const ITER: u32 = 64; // keeps tests fast; the RFC vectors use 4096

fn creds(alg: HashAlg, pw: &str) -> ScramCredentials {
    ScramCredentials::generate(alg, pw, ITER).unwrap()
}

fn exporter(data: &[u8]) -> ChannelBindings {
    ChannelBindings { available: vec![(ChannelBindingType::TlsExporter, data.to_vec())] }
}

fn challenge(step: Result<Step, Failure>) -> Vec<u8> {
    match step {
        Ok(Step::Challenge(c)) => c,
        other => panic!("expected challenge, got {other:?}"),
    }
}

/// Runs a full exchange; `stored` is what the caller's lookup returns.
fn exchange(
    sess: &mut ServerSession,
    client: &mut TestClient,
    stored: Option<ScramCredentials>,
) -> Result<Step, Failure> {
    match sess.step(&client.first())? {
        Step::NeedCredentials { .. } => {}
        other => panic!("expected NeedCredentials, got {other:?}"),
    }
    let sf = challenge(sess.credentials(stored));
    let cf = client.final_msg(&sf);
    sess.step(&cf)
}

fn assert_success(res: Result<Step, Failure>, client: &TestClient, user: &str) {
    match res {
        Ok(Step::Success { username, authzid, additional_data }) => {
            assert_eq!(username, user);
            assert_eq!(authzid, None);
            assert_eq!(additional_data, client.expected_v);
        }
        other => panic!("expected success, got {other:?}"),
    }
}

// ---- RFC vectors ----

#[test]
fn rfc5802_sha1_vector() {
    let salt = B64.decode("QSXCR+Q6sek8bf92").unwrap();
    let stored = ScramCredentials::derive(HashAlg::Sha1, "pencil", &salt, 4096).unwrap();
    let mut s = ServerSession::new(Mechanism::ScramSha1, ChannelBindings::none(), false)
        .with_nonce_for_test("3rfcNHYJY1ZVvWVs7j");
    assert_eq!(s.step(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL"), Ok(Step::NeedCredentials { username: "user".into() }));
    assert_eq!(
        challenge(s.credentials(Some(stored))),
        b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096"
    );
    assert_eq!(
        s.step(b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="),
        Ok(Step::Success {
            username: "user".into(),
            authzid: None,
            additional_data: b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=".to_vec()
        })
    );
    assert_eq!(s.step(b""), Err(Failure::MalformedRequest));
}

#[test]
fn rfc7677_sha256_vector() {
    let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
    let stored = ScramCredentials::derive(HashAlg::Sha256, "pencil", &salt, 4096).unwrap();
    let mut s = ServerSession::new(Mechanism::ScramSha256, ChannelBindings::none(), false)
        .with_nonce_for_test("%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
    assert_eq!(s.step(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"), Ok(Step::NeedCredentials { username: "user".into() }));
    assert_eq!(
        challenge(s.credentials(Some(stored))),
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    );
    assert_eq!(
        s.step(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="),
        Ok(Step::Success {
            username: "user".into(),
            authzid: None,
            additional_data: b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_vec()
        })
    );
}

// ---- Round trips with the independent client ----

#[test]
fn sha512_round_trip() {
    let mut s = ServerSession::new(Mechanism::ScramSha512, ChannelBindings::none(), false);
    let mut c = TestClient::simple(HashAlg::Sha512, "romeo", "wherefore art thou");
    let res = exchange(&mut s, &mut c, Some(creds(HashAlg::Sha512, "wherefore art thou")));
    assert_success(res, &c, "romeo");
}

#[test]
fn every_hash_with_and_without_binding() {
    for mech in Mechanism::ALL {
        let Some(alg) = mech.hash() else { continue };
        let (bindings, gs2, cb): (_, &str, &[u8]) = if mech.is_plus() {
            (exporter(b"ekm-bytes"), "p=tls-exporter,,", b"ekm-bytes")
        } else {
            (ChannelBindings::none(), "n,,", b"")
        };
        let mut s = ServerSession::new(mech, bindings, mech.is_plus());
        let mut c = TestClient::new(alg, "juliet", "pw", "abc", gs2, cb);
        let res = exchange(&mut s, &mut c, Some(creds(alg, "pw")));
        assert_success(res, &c, "juliet");
    }
}

#[test]
fn server_nonce_is_client_nonce_plus_random() {
    let mut s = ServerSession::new(Mechanism::ScramSha256, ChannelBindings::none(), false);
    s.step(b"n,,n=u,r=abc").unwrap();
    let sf = challenge(s.credentials(Some(creds(HashAlg::Sha256, "pw"))));
    let sf = String::from_utf8(sf).unwrap();
    let r = sf.split(',').next().unwrap().strip_prefix("r=abc").unwrap();
    assert_eq!(r.len(), 32); // base64 of 24 bytes
    assert!(!r.contains(','));
}

#[test]
fn empty_initial_response_prompts_for_client_first() {
    let mut s = ServerSession::new(Mechanism::ScramSha1, ChannelBindings::none(), false);
    assert_eq!(s.step(b""), Ok(Step::Challenge(vec![])));
    let mut c = TestClient::simple(HashAlg::Sha1, "u", "pw");
    let res = exchange(&mut s, &mut c, Some(creds(HashAlg::Sha1, "pw")));
    assert_success(res, &c, "u");

    let mut s = ServerSession::new(Mechanism::ScramSha1, ChannelBindings::none(), false);
    s.step(b"").unwrap();
    assert_eq!(s.step(b""), Err(Failure::MalformedRequest));
}

// ---- Channel binding ----

#[test]
fn tls_exporter_binding_success() {
    let mut s = ServerSession::new(Mechanism::ScramSha256Plus, exporter(b"\x01\x02\x03"), true);
    let mut c = TestClient::new(HashAlg::Sha256, "u", "pw", "n0nce", "p=tls-exporter,,", b"\x01\x02\x03");
    let res = exchange(&mut s, &mut c, Some(creds(HashAlg::Sha256, "pw")));
    assert_success(res, &c, "u");
}

#[test]
fn tls_server_end_point_binding_success() {
    let bindings = ChannelBindings {
        available: vec![
            (ChannelBindingType::TlsExporter, b"ekm".to_vec()),
            (ChannelBindingType::TlsServerEndPoint, b"certhash".to_vec()),
        ],
    };
    let mut s = ServerSession::new(Mechanism::ScramSha1Plus, bindings, true);
    let mut c = TestClient::new(HashAlg::Sha1, "u", "pw", "n0nce", "p=tls-server-end-point,,", b"certhash");
    let res = exchange(&mut s, &mut c, Some(creds(HashAlg::Sha1, "pw")));
    assert_success(res, &c, "u");
}

#[test]
fn wrong_binding_data_not_authorized() {
    let mut s = ServerSession::new(Mechanism::ScramSha256Plus, exporter(b"server-side"), true);
    let mut c = TestClient::new(HashAlg::Sha256, "u", "pw", "n0nce", "p=tls-exporter,,", b"mitm-side");
    let res = exchange(&mut s, &mut c, Some(creds(HashAlg::Sha256, "pw")));
    assert_eq!(res, Err(Failure::NotAuthorized));
}

#[test]
fn binding_type_not_available_not_authorized() {
    let mut s = ServerSession::new(Mechanism::ScramSha256Plus, exporter(b"ekm"), true);
    assert_eq!(s.step(b"p=tls-server-end-point,,n=u,r=abc"), Err(Failure::NotAuthorized));
    // A type we don't implement at all.
    let mut s = ServerSession::new(Mechanism::ScramSha256Plus, exporter(b"ekm"), true);
    assert_eq!(s.step(b"p=tls-unique,,n=u,r=abc"), Err(Failure::NotAuthorized));
    // No bindings at all (not on TLS).
    let mut s = ServerSession::new(Mechanism::ScramSha256Plus, ChannelBindings::none(), false);
    assert_eq!(s.step(b"p=tls-exporter,,n=u,r=abc"), Err(Failure::NotAuthorized));
}

#[test]
fn y_flag_with_plus_offered_is_downgrade() {
    let mut s = ServerSession::new(Mechanism::ScramSha256, exporter(b"ekm"), true);
    assert_eq!(s.step(b"y,,n=u,r=abc"), Err(Failure::NotAuthorized));
    // Session is dead afterwards.
    assert_eq!(s.step(b"y,,n=u,r=abc"), Err(Failure::MalformedRequest));
}

#[test]
fn y_flag_without_plus_offered_ok() {
    let mut s = ServerSession::new(Mechanism::ScramSha256, ChannelBindings::none(), false);
    let mut c = TestClient::new(HashAlg::Sha256, "u", "pw", "abc", "y,,", b"");
    let res = exchange(&mut s, &mut c, Some(creds(HashAlg::Sha256, "pw")));
    assert_success(res, &c, "u");
}

#[test]
fn plus_mechanism_without_p_flag_malformed() {
    for flag in ["n", "y"] {
        let mut s = ServerSession::new(Mechanism::ScramSha1Plus, exporter(b"ekm"), true);
        assert_eq!(s.step(format!("{flag},,n=u,r=abc").as_bytes()), Err(Failure::MalformedRequest));
    }
}

#[test]
fn non_plus_mechanism_with_p_flag_malformed() {
    let mut s = ServerSession::new(Mechanism::ScramSha1, exporter(b"ekm"), true);
    assert_eq!(s.step(b"p=tls-exporter,,n=u,r=abc"), Err(Failure::MalformedRequest));
}

#[test]
fn tampered_gs2_header_in_c_not_authorized() {
    // Client says "n" first but "y" in c=: the header must be echoed exactly.
    let mut s = ServerSession::new(Mechanism::ScramSha1, ChannelBindings::none(), false);
    let mut c = TestClient::simple(HashAlg::Sha1, "u", "pw");
    s.step(&c.first()).unwrap();
    let sf = challenge(s.credentials(Some(creds(HashAlg::Sha1, "pw"))));
    c.gs2 = "y,,".into();
    let cf = c.final_msg(&sf);
    assert_eq!(s.step(&cf), Err(Failure::NotAuthorized));
}

// ---- Authentication outcomes ----

#[test]
fn wrong_password_not_authorized() {
    let mut s = ServerSession::new(Mechanism::ScramSha256, ChannelBindings::none(), false);
    let mut c = TestClient::simple(HashAlg::Sha256, "u", "wrong");
    let res = exchange(&mut s, &mut c, Some(creds(HashAlg::Sha256, "right")));
    assert_eq!(res, Err(Failure::NotAuthorized));
    assert_eq!(s.step(b"anything"), Err(Failure::MalformedRequest));
}

#[test]
fn unknown_user_gets_challenge_then_not_authorized() {
    let mut s = ServerSession::new(Mechanism::ScramSha256, ChannelBindings::none(), false);
    let mut c = TestClient::simple(HashAlg::Sha256, "ghost", "pw");
    assert_eq!(s.step(&c.first()), Ok(Step::NeedCredentials { username: "ghost".into() }));
    let sf = challenge(s.credentials(None));
    let sf_str = String::from_utf8(sf.clone()).unwrap();
    assert!(sf_str.contains(",s="));
    assert!(sf_str.ends_with(",i=4096"));
    let cf = c.final_msg(&sf);
    assert_eq!(s.step(&cf), Err(Failure::NotAuthorized));
}

fn fake_salt(user: &str, secret: Option<&[u8]>) -> String {
    let mut s = ServerSession::new(Mechanism::ScramSha1, ChannelBindings::none(), false);
    if let Some(k) = secret {
        s = s.with_fake_salt_secret(k);
    }
    s.step(format!("n,,n={user},r=abc").as_bytes()).unwrap();
    let sf = String::from_utf8(challenge(s.credentials(None))).unwrap();
    sf.split(',').nth(1).unwrap().to_owned()
}

#[test]
fn fake_salt_is_stable_per_user() {
    assert_eq!(fake_salt("ghost", None), fake_salt("ghost", None));
    assert_ne!(fake_salt("ghost", None), fake_salt("phantom", None));
    let k1 = fake_salt("ghost", Some(b"k1"));
    assert_eq!(k1, fake_salt("ghost", Some(b"k1")));
    assert_ne!(k1, fake_salt("ghost", Some(b"k2")));
    // Same length as a generated salt: 16 bytes -> 24 base64 chars.
    assert_eq!(k1.strip_prefix("s=").unwrap().len(), 24);
}

#[test]
fn wrong_hash_credentials_temporary_failure() {
    let mut s = ServerSession::new(Mechanism::ScramSha256, ChannelBindings::none(), false);
    s.step(b"n,,n=u,r=abc").unwrap();
    assert_eq!(s.credentials(Some(creds(HashAlg::Sha1, "pw"))), Err(Failure::TemporaryAuthFailure));
    assert_eq!(s.step(b"x"), Err(Failure::MalformedRequest));
}

#[test]
fn corrupt_credentials_temporary_failure() {
    let mut s = ServerSession::new(Mechanism::ScramSha256, ChannelBindings::none(), false);
    s.step(b"n,,n=u,r=abc").unwrap();
    let mut c = creds(HashAlg::Sha256, "pw");
    c.stored_key.pop();
    assert_eq!(s.credentials(Some(c)), Err(Failure::TemporaryAuthFailure));
}

#[test]
fn api_misuse_is_temporary_failure() {
    let mut s = ServerSession::new(Mechanism::ScramSha1, ChannelBindings::none(), false);
    assert_eq!(s.credentials(None), Err(Failure::TemporaryAuthFailure));
    let mut s = ServerSession::new(Mechanism::ScramSha1, ChannelBindings::none(), false);
    assert_eq!(s.plain_verified(true), Err(Failure::TemporaryAuthFailure));
    let mut s = ServerSession::new(Mechanism::Plain, ChannelBindings::none(), false);
    assert_eq!(s.credentials(None), Err(Failure::TemporaryAuthFailure));
    // Client speaking while we await the lookup.
    let mut s = ServerSession::new(Mechanism::ScramSha1, ChannelBindings::none(), false);
    s.step(b"n,,n=u,r=abc").unwrap();
    assert_eq!(s.step(b"n,,n=u,r=abc"), Err(Failure::MalformedRequest));
}

#[test]
fn nonce_mismatch_not_authorized() {
    let mut s = ServerSession::new(Mechanism::ScramSha1, ChannelBindings::none(), false).with_nonce_for_test("SERVER");
    s.step(b"n,,n=u,r=abc").unwrap();
    challenge(s.credentials(Some(creds(HashAlg::Sha1, "pw"))));
    let p = B64.encode([0u8; 20]);
    assert_eq!(s.step(format!("c=biws,r=abcSERVEX,p={p}").as_bytes()), Err(Failure::NotAuthorized));
}

#[test]
fn input_after_success_malformed() {
    let mut s = ServerSession::new(Mechanism::ScramSha512, ChannelBindings::none(), false);
    let mut c = TestClient::simple(HashAlg::Sha512, "u", "pw");
    let cf_res = exchange(&mut s, &mut c, Some(creds(HashAlg::Sha512, "pw")));
    assert!(matches!(cf_res, Ok(Step::Success { .. })));
    assert_eq!(s.step(b""), Err(Failure::MalformedRequest));
    assert_eq!(s.credentials(None), Err(Failure::TemporaryAuthFailure));
}

// ---- Parsing ----

#[test]
fn username_with_escapes() {
    let mut s = ServerSession::new(Mechanism::ScramSha256, ChannelBindings::none(), false);
    let mut c = TestClient::simple(HashAlg::Sha256, "us=2Cer=3Dx", "pw");
    assert_eq!(s.step(&c.first()), Ok(Step::NeedCredentials { username: "us,er=x".into() }));
    let sf = challenge(s.credentials(Some(creds(HashAlg::Sha256, "pw"))));
    let cf = c.final_msg(&sf);
    assert_success(s.step(&cf), &c, "us,er=x");

    let mut s = ServerSession::new(Mechanism::ScramSha256, ChannelBindings::none(), false);
    assert_eq!(s.step(b"n,,n=us=41er,r=abc"), Err(Failure::MalformedRequest));
}

#[test]
fn username_is_saslprepped() {
    let mut s = ServerSession::new(Mechanism::ScramSha1, ChannelBindings::none(), false);
    assert_eq!(s.step("n,,n=a\u{a0}b,r=abc".as_bytes()), Ok(Step::NeedCredentials { username: "a b".into() }));
    let mut s = ServerSession::new(Mechanism::ScramSha1, ChannelBindings::none(), false);
    assert_eq!(s.step("n,,n=a\u{7}b,r=abc".as_bytes()), Err(Failure::MalformedRequest));
}

#[test]
fn authzid_returned_unescaped() {
    let mut s = ServerSession::new(Mechanism::ScramSha1, ChannelBindings::none(), false);
    let mut c = TestClient::new(HashAlg::Sha1, "u", "pw", "abc", "n,a=admin=2Cx@example.com,", b"");
    let res = exchange(&mut s, &mut c, Some(creds(HashAlg::Sha1, "pw")));
    match res {
        Ok(Step::Success { authzid, .. }) => {
            assert_eq!(authzid.as_deref(), Some("admin,x@example.com"))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn non_utf8_malformed() {
    let mut s = ServerSession::new(Mechanism::ScramSha1, ChannelBindings::none(), false);
    assert_eq!(s.step(b"n,,n=\xff\xfe,r=abc"), Err(Failure::MalformedRequest));

    let mut s = ServerSession::new(Mechanism::ScramSha1, ChannelBindings::none(), false);
    s.step(b"n,,n=u,r=abc").unwrap();
    challenge(s.credentials(Some(creds(HashAlg::Sha1, "pw"))));
    assert_eq!(s.step(b"c=biws,r=\xff,p=AAAA"), Err(Failure::MalformedRequest));
}

#[test]
fn malformed_client_first() {
    let cases: &[&[u8]] = &[
        b"n",
        b"n,",
        b"n,,",
        b"x,,n=u,r=abc",
        b"p=,,n=u,r=abc",
        b"n,b=x,n=u,r=abc",
        b"n,a=,n=u,r=abc",
        b"n,,m=ext,n=u,r=abc",
        b"n,,r=abc,n=u",
        b"n,,n=,r=abc",
        b"n,,n=u",
        b"n,,n=u,r=",
        b"n,,n=u,r=a b",
        b"n,,n=u,r=abc,bogus",
    ];
    for case in cases {
        let mut s = ServerSession::new(Mechanism::ScramSha1, ChannelBindings::none(), false);
        assert_eq!(s.step(case), Err(Failure::MalformedRequest), "{}", String::from_utf8_lossy(case));
    }
    // Optional extensions are ignored.
    let mut s = ServerSession::new(Mechanism::ScramSha1, ChannelBindings::none(), false);
    assert!(s.step(b"n,,n=u,r=abc,x=ext").is_ok());
}

#[test]
fn malformed_client_final() {
    let cases: &[&[u8]] = &[
        b"",
        b"c=biws,r=abcS",
        b"r=abcS,c=biws,p=AAAA",
        b"c=biws,p=AAAA",
        b"c=biws,r=abcS,p=!!!",
        b"c=%%%,r=abcS,p=AAAA",
        b"c=biws,r=abcS,p=AAAA,x=y",
    ];
    for case in cases {
        let mut s = ServerSession::new(Mechanism::ScramSha1, ChannelBindings::none(), false).with_nonce_for_test("S");
        s.step(b"n,,n=u,r=abc").unwrap();
        challenge(s.credentials(Some(creds(HashAlg::Sha1, "pw"))));
        assert_eq!(s.step(case), Err(Failure::MalformedRequest), "{}", String::from_utf8_lossy(case));
    }
    // Proof of the wrong length is just a failed proof.
    let mut s = ServerSession::new(Mechanism::ScramSha1, ChannelBindings::none(), false).with_nonce_for_test("S");
    s.step(b"n,,n=u,r=abc").unwrap();
    challenge(s.credentials(Some(creds(HashAlg::Sha1, "pw"))));
    assert_eq!(s.step(b"c=biws,r=abcS,p=AAAA"), Err(Failure::NotAuthorized));
}

// ---- PLAIN through the session API ----

#[test]
fn plain_via_session() {
    let stored = creds(HashAlg::Sha256, "secret");
    let mut s = ServerSession::new(Mechanism::Plain, ChannelBindings::none(), false);
    let Ok(Step::NeedPasswordCheck { username, password }) = s.step(b"\0alice\0secret") else { panic!() };
    assert_eq!(username, "alice");
    let ok = stored.verify_password(&password);
    assert_eq!(
        s.plain_verified(ok),
        Ok(Step::Success { username: "alice".into(), authzid: None, additional_data: vec![] })
    );

    let mut s = ServerSession::new(Mechanism::Plain, ChannelBindings::none(), false);
    let Ok(Step::NeedPasswordCheck { password, .. }) = s.step(b"\0alice\0guess") else { panic!() };
    assert_eq!(s.plain_verified(stored.verify_password(&password)), Err(Failure::NotAuthorized));
}

#[test]
fn step_debug_redacts_password() {
    let step = Step::NeedPasswordCheck { username: "alice".into(), password: "hunter2".into() };
    let dbg = format!("{step:?}");
    assert!(dbg.contains("alice"));
    assert!(!dbg.contains("hunter2"));
}

// ---- Small public helpers ----

#[test]
fn base64_helper() {
    assert_eq!(decode_base64("="), Ok(vec![]));
    assert_eq!(decode_base64(""), Ok(vec![]));
    assert_eq!(decode_base64("biws"), Ok(b"n,,".to_vec()));
    assert_eq!(decode_base64("bi"), Err(Failure::IncorrectEncoding));
    assert_eq!(decode_base64("b!ws"), Err(Failure::IncorrectEncoding));
    assert_eq!(decode_base64("bi ws"), Err(Failure::IncorrectEncoding));
    assert_eq!(encode_base64(b""), "=");
    assert_eq!(encode_base64(b"n,,"), "biws");
}

#[test]
fn mechanism_names() {
    let names: Vec<_> = Mechanism::ALL.iter().map(|m| m.name()).collect();
    assert_eq!(
        names,
        [
            "SCRAM-SHA-512-PLUS",
            "SCRAM-SHA-512",
            "SCRAM-SHA-256-PLUS",
            "SCRAM-SHA-256",
            "SCRAM-SHA-1-PLUS",
            "SCRAM-SHA-1",
            "PLAIN"
        ]
    );
    for m in Mechanism::ALL {
        assert_eq!(Mechanism::from_name(m.name()), Some(m));
        assert_eq!(m.is_plus(), m.name().ends_with("-PLUS"));
        match m.hash() {
            Some(h) => assert!(m.name().starts_with(&format!("SCRAM-{}", h.name()))),
            None => assert_eq!(m, Mechanism::Plain),
        }
    }
    assert_eq!(Mechanism::from_name("scram-sha-1"), None);
    assert_eq!(Mechanism::from_name("DIGEST-MD5"), None);
    assert_eq!(HashAlg::ALL.map(|h| h.name()), ["SHA-512", "SHA-256", "SHA-1"]);
    for t in [ChannelBindingType::TlsExporter, ChannelBindingType::TlsServerEndPoint] {
        assert_eq!(ChannelBindingType::from_name(t.name()), Some(t));
    }
    assert_eq!(ChannelBindingType::from_name("tls-unique"), None);
    assert_eq!(Failure::NotAuthorized.condition(), "not-authorized");
    assert_eq!(Failure::TemporaryAuthFailure.to_string(), "temporary-auth-failure");
}

// ---- Interop with the xmpp-rs `sasl` client crate ----

mod interop {
    use super::*;
    use sasl::client::mechanisms::Scram;
    use sasl::client::Mechanism as _;
    use sasl::common::scram::{ScramProvider, Sha1, Sha256};
    use sasl::common::ChannelBinding;

    fn drive<P: ScramProvider>(
        mech: Mechanism,
        bindings: ChannelBindings,
        client_cb: ChannelBinding,
        client_pw: &str,
        stored_pw: &str,
    ) -> Result<(), Failure> {
        let hash = mech.hash().unwrap();
        let mut client = Scram::<P>::new("juliet", client_pw, client_cb).unwrap();
        assert_eq!(client.name(), mech.name());
        let mut server = ServerSession::new(mech, bindings, mech.is_plus());
        let first = client.initial();
        assert_eq!(server.step(&first)?, Step::NeedCredentials { username: "juliet".into() });
        let stored = ScramCredentials::generate(hash, stored_pw, ITER).unwrap();
        let Step::Challenge(sf) = server.credentials(Some(stored))? else { panic!("expected challenge") };
        let cf = client.response(&sf).unwrap();
        let Step::Success { username, additional_data, .. } = server.step(&cf)? else { panic!("expected success") };
        assert_eq!(username, "juliet");
        client.success(&additional_data).expect("client accepts server signature");
        Ok(())
    }

    #[test]
    fn sasl_crate_client_sha1() {
        drive::<Sha1>(Mechanism::ScramSha1, ChannelBindings::none(), ChannelBinding::None, "pw", "pw").unwrap();
    }

    #[test]
    fn sasl_crate_client_sha256() {
        drive::<Sha256>(Mechanism::ScramSha256, ChannelBindings::none(), ChannelBinding::None, "pw", "pw").unwrap();
    }

    #[test]
    fn sasl_crate_client_sha256_plus_exporter() {
        drive::<Sha256>(
            Mechanism::ScramSha256Plus,
            exporter(b"ekm"),
            ChannelBinding::TlsExporter(b"ekm".to_vec()),
            "pw",
            "pw",
        )
        .unwrap();
        assert_eq!(
            drive::<Sha256>(
                Mechanism::ScramSha256Plus,
                exporter(b"ekm"),
                ChannelBinding::TlsExporter(b"other".to_vec()),
                "pw",
                "pw",
            ),
            Err(Failure::NotAuthorized)
        );
    }

    #[test]
    fn sasl_crate_client_wrong_password() {
        assert_eq!(
            drive::<Sha1>(Mechanism::ScramSha1, ChannelBindings::none(), ChannelBinding::None, "nope", "pw",),
            Err(Failure::NotAuthorized)
        );
    }
}

#[test]
fn xep0474_downgrade_protection_hash_matches_the_spec_example() {
    // XEP-0474 §3.3: SHA-1 of 'SCRAM-SHA-1\x1eSCRAM-SHA-1-PLUS\x1ftls-exporter\x1etls-server-end-point'.
    let cbs = [ChannelBindingType::TlsServerEndPoint, ChannelBindingType::TlsExporter];
    let input = downgrade_protection_input(&["SCRAM-SHA-1-PLUS", "SCRAM-SHA-1"], &cbs);
    assert_eq!(input, "SCRAM-SHA-1\u{1e}SCRAM-SHA-1-PLUS\u{1f}tls-exporter\u{1e}tls-server-end-point");
    let mut s = ServerSession::new(Mechanism::ScramSha1, ChannelBindings::none(), false)
        .with_downgrade_protection(&["SCRAM-SHA-1-PLUS", "SCRAM-SHA-1"], &cbs);
    assert!(matches!(s.step(b"n,,n=user,r=abc"), Ok(Step::NeedCredentials { .. })));
    let creds = ScramCredentials::derive(HashAlg::Sha1, "pencil", b"salt-salt", 4096).unwrap();
    let Ok(Step::Challenge(first)) = s.credentials(Some(creds)) else { panic!("no challenge") };
    let first = String::from_utf8(first).unwrap();
    assert!(first.ends_with(",h=G6k/rBLDqgOhRRaCuuatSDFkJ08="), "{first}");
    // Without XEP-0440 advertisement there is no U+001F part.
    assert_eq!(downgrade_protection_input(&["PLAIN", "SCRAM-SHA-1"], &[]), "PLAIN\u{1e}SCRAM-SHA-1");
}
