//! A room's configuration (XEP-0045 §10.2, the `muc#roomconfig` form), its
//! `muc#roominfo` disco form (§15.5.4) and the voice request forms
//! (`muc#request`, §7.13 and §8.6).

use serde::{Deserialize, Serialize};
use starling_proto::xmpp_parsers::data_forms::{DataForm, DataFormType, Field, FieldType};
use starling_proto::{ns, Element, FullJid, StanzaError};

const ROOMCONFIG: &str = "http://jabber.org/protocol/muc#roomconfig";
const ROOMINFO: &str = "http://jabber.org/protocol/muc#roominfo";
const REQUEST: &str = "http://jabber.org/protocol/muc#request";

/// A `muc#request` form sent to a room.
#[derive(Debug, PartialEq, Eq)]
pub enum VoiceRequest {
    /// §7.13: a visitor asks for voice.
    Ask,
    /// §8.6: a moderator answers the approval form for the occupant `nick`.
    Answer { nick: String, allow: bool },
}

impl VoiceRequest {
    /// The request a message carries, if any.
    pub fn from_message(message: &Element) -> Option<VoiceRequest> {
        let form = message.get_child("x", ns::DATA_FORMS).and_then(|x| DataForm::try_from(x.clone()).ok())?;
        if form.form_type() != Some(REQUEST) || form.type_ != DataFormType::Submit {
            return None;
        }
        let value = |var: &str| {
            form.fields
                .iter()
                .find(|f| f.var.as_deref() == Some(var))
                .and_then(|f| f.values.first())
                .map(String::as_str)
        };
        match (value("muc#roomnick"), value("muc#request_allow")) {
            (Some(nick), Some(allow)) => {
                Some(VoiceRequest::Answer { nick: nick.to_owned(), allow: matches!(allow, "1" | "true") })
            }
            _ => Some(VoiceRequest::Ask),
        }
    }

    /// §8.6: the approval form sent to the room's moderators.
    pub fn approval_form(jid: &FullJid, nick: &str) -> DataForm {
        let mut form = DataForm::new(
            DataFormType::Form,
            REQUEST,
            vec![
                labelled(Field::new("muc#role", FieldType::ListSingle).with_value("participant"), "Requested role"),
                labelled(Field::new("muc#jid", FieldType::JidSingle).with_value(jid.as_str()), "User ID"),
                labelled(Field::text_single("muc#roomnick", nick), "Room Nickname"),
                labelled(
                    Field::new("muc#request_allow", FieldType::Boolean).with_value("false"),
                    "Grant voice to this person?",
                ),
            ],
        );
        form.title = Some("Voice request".to_owned());
        form.instructions = Some(
            "To approve this request for voice, select the \"Grant voice to this person?\" checkbox and submit."
                .to_owned(),
        );
        form
    }
}

fn labelled(mut field: Field, label: &str) -> Field {
    field.label = Some(label.to_owned());
    field
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomConfig {
    pub name: String,
    pub description: String,
    pub persistent: bool,
    pub public: bool,
    pub members_only: bool,
    pub moderated: bool,
    /// Set: joining needs it (`passwordprotectedroom`).
    pub password: Option<String>,
    /// Everyone sees occupants' real JIDs (non-anonymous), else moderators only.
    pub whois_anyone: bool,
    pub max_users: usize,
    /// Participants may change the subject, else moderators only.
    pub change_subject: bool,
    /// Occupants may send each other private messages.
    pub allow_pm: bool,
    /// Messages go to the room's archive (XEP-0313).
    pub archiving: bool,
}

impl RoomConfig {
    pub fn new(max_users: usize) -> Self {
        RoomConfig {
            name: String::new(),
            description: String::new(),
            persistent: false,
            public: true,
            members_only: false,
            moderated: false,
            password: None,
            whois_anyone: false,
            max_users,
            change_subject: false,
            allow_pm: true,
            archiving: true,
        }
    }

    /// §10.2: the form an owner fills in, with the current values.
    pub fn form(&self) -> DataForm {
        let boolean =
            |var: &str, value: bool| Field::new(var, FieldType::Boolean).with_value(if value { "1" } else { "0" });
        let fields = vec![
            Field::text_single("muc#roomconfig_roomname", &self.name),
            Field::text_single("muc#roomconfig_roomdesc", &self.description),
            boolean("muc#roomconfig_persistentroom", self.persistent),
            boolean("muc#roomconfig_publicroom", self.public),
            boolean("muc#roomconfig_membersonly", self.members_only),
            boolean("muc#roomconfig_moderatedroom", self.moderated),
            boolean("muc#roomconfig_passwordprotectedroom", self.password.is_some()),
            Field::new("muc#roomconfig_roomsecret", FieldType::TextPrivate)
                .with_value(self.password.as_deref().unwrap_or_default()),
            Field::new("muc#roomconfig_whois", FieldType::ListSingle).with_value(if self.whois_anyone {
                "anyone"
            } else {
                "moderators"
            }),
            Field::text_single("muc#roomconfig_maxusers", &self.max_users.to_string()),
            boolean("muc#roomconfig_changesubject", self.change_subject),
            Field::new("muc#roomconfig_allowpm", FieldType::ListSingle).with_value(if self.allow_pm {
                "anyone"
            } else {
                "none"
            }),
            boolean("muc#roomconfig_enablearchiving", self.archiving),
        ];
        DataForm::new(DataFormType::Form, ROOMCONFIG, fields)
    }

    /// §10.2: applies a submitted form; fields left out keep their values.
    /// `max_users` is capped by the service's limit.
    pub fn apply(&mut self, form: &DataForm, service_max: usize) -> Result<(), StanzaError> {
        let invalid = |var: &str| StanzaError::not_acceptable().with_text(format!("invalid value for {var}"));
        let mut protected = self.password.is_some();
        let mut secret = self.password.clone();
        for field in &form.fields {
            let Some(var) = field.var.as_deref() else { continue };
            let value = field.values.first().map(String::as_str).unwrap_or_default();
            let flag = || match value {
                "1" | "true" => Ok(true),
                "0" | "false" | "" => Ok(false),
                _ => Err(invalid(var)),
            };
            match var {
                "FORM_TYPE" => {}
                "muc#roomconfig_roomname" => self.name = value.to_owned(),
                "muc#roomconfig_roomdesc" => self.description = value.to_owned(),
                "muc#roomconfig_persistentroom" => self.persistent = flag()?,
                "muc#roomconfig_publicroom" => self.public = flag()?,
                "muc#roomconfig_membersonly" => self.members_only = flag()?,
                "muc#roomconfig_moderatedroom" => self.moderated = flag()?,
                "muc#roomconfig_passwordprotectedroom" => protected = flag()?,
                "muc#roomconfig_roomsecret" => secret = Some(value.to_owned()).filter(|s| !s.is_empty()),
                "muc#roomconfig_whois" => {
                    self.whois_anyone = match value {
                        "anyone" => true,
                        "moderators" => false,
                        _ => return Err(invalid(var)),
                    }
                }
                "muc#roomconfig_maxusers" => {
                    let max: usize = value.parse().map_err(|_| invalid(var))?;
                    self.max_users = max.clamp(1, service_max);
                }
                "muc#roomconfig_changesubject" => self.change_subject = flag()?,
                "muc#roomconfig_allowpm" => self.allow_pm = value != "none",
                "muc#roomconfig_enablearchiving" => self.archiving = flag()?,
                // Fields of other software's forms: not ours to refuse.
                _ => {}
            }
        }
        self.password = match (protected, secret) {
            (true, Some(secret)) => Some(secret),
            (true, None) => {
                return Err(StanzaError::not_acceptable().with_text("a password-protected room needs a secret"))
            }
            (false, _) => None,
        };
        Ok(())
    }

    /// §6.4: the disco#info features that describe the room.
    pub fn features(&self) -> Vec<&'static str> {
        vec![
            if self.persistent { "muc_persistent" } else { "muc_temporary" },
            if self.public { "muc_public" } else { "muc_hidden" },
            if self.members_only { "muc_membersonly" } else { "muc_open" },
            if self.moderated { "muc_moderated" } else { "muc_unmoderated" },
            if self.password.is_some() { "muc_passwordprotected" } else { "muc_unsecured" },
            if self.whois_anyone { "muc_nonanonymous" } else { "muc_semianonymous" },
        ]
    }

    /// §15.5.4 `muc#roominfo`, with the current number of occupants.
    pub fn info_form(&self, occupants: usize) -> DataForm {
        DataForm::new(
            DataFormType::Result_,
            ROOMINFO,
            vec![
                Field::text_single("muc#roominfo_description", &self.description),
                Field::text_single("muc#roominfo_occupants", &occupants.to_string()),
                Field::text_single("muc#roomconfig_roomname", &self.name),
            ],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_submitted_form_changes_what_it_names() {
        let mut config = RoomConfig::new(100);
        let mut form = config.form();
        form.type_ = DataFormType::Submit;
        for field in &mut form.fields {
            match field.var.as_deref() {
                Some("muc#roomconfig_persistentroom") => field.values = vec!["1".into()],
                Some("muc#roomconfig_maxusers") => field.values = vec!["5000".into()],
                _ => {}
            }
        }
        config.apply(&form, 300).unwrap();
        assert!(config.persistent);
        assert_eq!(config.max_users, 300, "capped by the service");
        let protect = DataForm::new(
            DataFormType::Submit,
            ROOMCONFIG,
            vec![Field::new("muc#roomconfig_passwordprotectedroom", FieldType::Boolean).with_value("1")],
        );
        assert!(config.clone().apply(&protect, 300).is_err(), "no secret given");
    }

    /// XEP-0045 §7.13 (request) and §8.6 (approval): the forms as the
    /// examples there show them.
    #[test]
    fn voice_requests_and_their_answers_are_told_apart() {
        let message = |form: DataForm| {
            let mut message = Element::bare("message", ns::CLIENT);
            message.append_child(form.into());
            message
        };
        let ask = DataForm::new(
            DataFormType::Submit,
            REQUEST,
            vec![Field::new("muc#role", FieldType::ListSingle).with_value("participant")],
        );
        assert_eq!(VoiceRequest::from_message(&message(ask)), Some(VoiceRequest::Ask));
        let jid: FullJid = "hag66@shakespeare.lit/pda".parse().unwrap();
        let mut answer = VoiceRequest::approval_form(&jid, "thirdwitch");
        answer.type_ = DataFormType::Submit;
        answer.fields.last_mut().unwrap().values = vec!["true".into()];
        assert_eq!(
            VoiceRequest::from_message(&message(answer)),
            Some(VoiceRequest::Answer { nick: "thirdwitch".into(), allow: true })
        );
        let config = RoomConfig::new(10).form();
        assert_eq!(VoiceRequest::from_message(&message(config)), None, "another form type");
    }
}
