//! PLAIN (RFC 4616): `[authzid] NUL authcid NUL passwd`.

use crate::{Failure, Step};

/// RFC 4616 §2 limits each field to 255 octets.
const MAX_FIELD: usize = 255;

enum State {
    Initial,
    /// We answered a missing initial response with an empty challenge.
    SentEmptyChallenge,
    AwaitingCheck {
        username: String,
        authzid: Option<String>,
    },
    Done,
}

pub(crate) struct PlainServer {
    state: State,
}

impl PlainServer {
    pub(crate) fn new() -> Self {
        PlainServer { state: State::Initial }
    }

    pub(crate) fn step(&mut self, input: &[u8]) -> Result<Step, Failure> {
        match std::mem::replace(&mut self.state, State::Done) {
            // No initial response: prompt for one (RFC 6120 §6.4.2).
            State::Initial if input.is_empty() => {
                self.state = State::SentEmptyChallenge;
                Ok(Step::Challenge(Vec::new()))
            }
            State::Initial | State::SentEmptyChallenge => {
                let (username, password, authzid) = parse(input)?;
                self.state = State::AwaitingCheck { username: username.clone(), authzid };
                Ok(Step::NeedPasswordCheck { username, password })
            }
            // The client has nothing more to say once it sent its message.
            State::AwaitingCheck { .. } | State::Done => Err(Failure::MalformedRequest),
        }
    }

    pub(crate) fn verified(&mut self, ok: bool) -> Result<Step, Failure> {
        match std::mem::replace(&mut self.state, State::Done) {
            State::AwaitingCheck { username, authzid } if ok => {
                Ok(Step::Success { username, authzid, additional_data: Vec::new() })
            }
            State::AwaitingCheck { .. } => Err(Failure::NotAuthorized),
            _ => Err(Failure::TemporaryAuthFailure),
        }
    }
}

/// Returns (prepped authcid, password as sent, authzid).
fn parse(input: &[u8]) -> Result<(String, String, Option<String>), Failure> {
    let text = std::str::from_utf8(input).map_err(|_| Failure::MalformedRequest)?;
    let mut parts = text.split('\0');
    let (Some(authzid), Some(authcid), Some(passwd), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Failure::MalformedRequest);
    };
    if [authzid, authcid, passwd].iter().any(|f| f.len() > MAX_FIELD) {
        return Err(Failure::MalformedRequest);
    }
    if authcid.is_empty() {
        return Err(Failure::MalformedRequest);
    }
    // An empty password is well-formed but can never be right; report it as
    // a plain authentication failure.
    if passwd.is_empty() {
        return Err(Failure::NotAuthorized);
    }
    let username = stringprep::saslprep(authcid).map_err(|_| Failure::MalformedRequest)?.into_owned();
    if username.is_empty() {
        return Err(Failure::MalformedRequest);
    }
    // The password is SASLprep'ed by `ScramCredentials::verify_password`.
    let authzid = (!authzid.is_empty()).then(|| authzid.to_owned());
    Ok((username, passwd.to_owned(), authzid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8]) -> Result<Step, Failure> {
        PlainServer::new().step(input)
    }

    #[test]
    fn happy_path() {
        let mut p = PlainServer::new();
        assert_eq!(
            p.step(b"\0juliet\0r0m30myr0m30"),
            Ok(Step::NeedPasswordCheck { username: "juliet".into(), password: "r0m30myr0m30".into() })
        );
        assert_eq!(
            p.verified(true),
            Ok(Step::Success { username: "juliet".into(), authzid: None, additional_data: vec![] })
        );
        // Nothing after success.
        assert_eq!(p.step(b"x"), Err(Failure::MalformedRequest));
        assert_eq!(p.verified(true), Err(Failure::TemporaryAuthFailure));
    }

    #[test]
    fn authzid_returned_as_given() {
        let mut p = PlainServer::new();
        p.step(b"juliet@example.com/x\0juliet\0pw").unwrap();
        assert_eq!(
            p.verified(true),
            Ok(Step::Success {
                username: "juliet".into(),
                authzid: Some("juliet@example.com/x".into()),
                additional_data: vec![]
            })
        );
    }

    #[test]
    fn wrong_password() {
        let mut p = PlainServer::new();
        p.step(b"\0juliet\0nope").unwrap();
        assert_eq!(p.verified(false), Err(Failure::NotAuthorized));
        assert_eq!(p.step(b"\0juliet\0nope"), Err(Failure::MalformedRequest));
    }

    #[test]
    fn empty_initial_response_prompts_once() {
        let mut p = PlainServer::new();
        assert_eq!(p.step(b""), Ok(Step::Challenge(vec![])));
        assert_eq!(p.step(b""), Err(Failure::MalformedRequest));
        let mut p = PlainServer::new();
        p.step(b"").unwrap();
        assert!(matches!(p.step(b"\0u\0p"), Ok(Step::NeedPasswordCheck { .. })));
    }

    #[test]
    fn malformed() {
        assert_eq!(run(b"juliet"), Err(Failure::MalformedRequest));
        assert_eq!(run(b"\0juliet"), Err(Failure::MalformedRequest));
        assert_eq!(run(b"a\0b\0c\0d"), Err(Failure::MalformedRequest));
        assert_eq!(run(b"\0\0pw"), Err(Failure::MalformedRequest));
        assert_eq!(run(b"\0juliet\0"), Err(Failure::NotAuthorized));
        assert_eq!(run(b"\0jul\xffiet\0pw"), Err(Failure::MalformedRequest));
        // Prohibited by SASLprep (control char).
        assert_eq!(run(b"\0jul\x07iet\0pw"), Err(Failure::MalformedRequest));
    }

    #[test]
    fn too_long_fields() {
        let long = "a".repeat(256);
        let ok = "a".repeat(255);
        assert_eq!(run(format!("\0{long}\0pw").as_bytes()), Err(Failure::MalformedRequest));
        assert_eq!(run(format!("\0u\0{long}").as_bytes()), Err(Failure::MalformedRequest));
        assert_eq!(run(format!("{long}\0u\0pw").as_bytes()), Err(Failure::MalformedRequest));
        assert!(run(format!("{ok}\0{ok}\0{ok}").as_bytes()).is_ok());
    }

    #[test]
    fn authcid_is_saslprepped() {
        assert_eq!(
            run("\0a\u{a0}b\0pw".as_bytes()),
            Ok(Step::NeedPasswordCheck { username: "a b".into(), password: "pw".into() })
        );
    }
}
