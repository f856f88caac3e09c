//! The words of the mail the use cases send ([`portcullis_accounts::mail::Mail`]): one askama
//! template for the text bodies and one for the HTML bodies (`templates/mail`), by kind, with
//! links built from `server.public_url` (never from a request's `Host`, which its sender
//! chooses).

use askama::Template;
use portcullis_accounts::mail::{Compose, Composed, Mail};

#[derive(Template)]
#[template(path = "mail/message.txt")]
struct Text<'a> {
    kind: &'a str,
    username: &'a str,
    link: &'a str,
}

#[derive(Template)]
#[template(path = "mail/message.html")]
struct Html<'a> {
    kind: &'a str,
    username: &'a str,
    link: &'a str,
}

/// The templates, with the service's public URL.
pub struct MailTemplates {
    /// `server.public_url`, without a trailing slash.
    public_url: String,
}

impl MailTemplates {
    /// Templates whose links start with `public_url`.
    pub fn new(public_url: &str) -> Self {
        Self {
            public_url: public_url.trim_end_matches('/').to_owned(),
        }
    }
}

impl Compose for MailTemplates {
    fn compose(&self, mail: &Mail) -> anyhow::Result<Composed> {
        let page = |path: &str, token: &str| format!("{}{path}?token={token}", self.public_url);
        let forgot = || format!("{}/forgot", self.public_url);
        let (username, subject, link) = match mail {
            Mail::VerifyAddress { username, token } => (
                username,
                format!("Verify your address for {username}"),
                page("/verify-email", token),
            ),
            Mail::AddressChanged { username } => (
                username,
                format!("The address of {username} changed"),
                String::new(),
            ),
            Mail::ResetPassword { username, token } => (
                username,
                format!("Reset the password of {username}"),
                page("/reset", token),
            ),
            Mail::PasswordReset { username } => (
                username,
                format!("The password of {username} was reset"),
                String::new(),
            ),
            Mail::PasswordChanged { username } => (
                username,
                format!("The password of {username} was changed"),
                forgot(),
            ),
            Mail::NewDeviceLogin { username, token } => (
                username,
                format!("A new sign-in to {username}"),
                page("/not-me", token),
            ),
            Mail::AccountLocked { username, token } => (
                username,
                format!("{username} was locked after failed sign-ins"),
                page("/unlock", token),
            ),
            Mail::SecondFactorAdded { username } => (
                username,
                format!("A second factor was added to {username}"),
                forgot(),
            ),
            Mail::SecondFactorRemoved { username } => (
                username,
                format!("The second factor of {username} was removed"),
                forgot(),
            ),
            Mail::PasskeyAdded { username } => (
                username,
                format!("A passkey was added to {username}"),
                forgot(),
            ),
            Mail::PasskeyRemoved { username } => (
                username,
                format!("A passkey was removed from {username}"),
                forgot(),
            ),
        };
        let kind = mail.kind();
        Ok(Composed {
            subject,
            text: Text {
                kind,
                username,
                link: &link,
            }
            .render()?,
            html: Html {
                kind,
                username,
                link: &link,
            }
            .render()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_is_built_from_the_public_url_and_html_is_escaped() {
        let templates = MailTemplates::new("https://login.example.com/");
        let mail = Mail::VerifyAddress {
            username: "<alice>".to_owned(),
            token: "abc".to_owned(),
        };
        let composed = templates.compose(&mail).unwrap();
        assert!(
            composed
                .text
                .starts_with("Hello <alice>,\n\nSomeone (we hope you) asked"),
            "{}",
            composed.text
        );
        assert!(
            composed
                .text
                .contains("https://login.example.com/verify-email?token=abc"),
            "{}",
            composed.text
        );
        assert!(
            composed.html.contains("&#60;alice&#62;"),
            "{}",
            composed.html
        );
        assert!(!composed.html.contains("<alice>"));
    }

    #[test]
    fn every_kind_has_words_in_both_bodies() {
        let templates = MailTemplates::new("https://login.example.com");
        let username = "alice".to_owned();
        let token = "abc".to_owned();
        for mail in [
            Mail::VerifyAddress {
                username: username.clone(),
                token: token.clone(),
            },
            Mail::AddressChanged {
                username: username.clone(),
            },
            Mail::ResetPassword {
                username: username.clone(),
                token: token.clone(),
            },
            Mail::PasswordReset {
                username: username.clone(),
            },
            Mail::PasswordChanged {
                username: username.clone(),
            },
            Mail::NewDeviceLogin {
                username: username.clone(),
                token: token.clone(),
            },
            Mail::AccountLocked {
                username: username.clone(),
                token: token.clone(),
            },
            Mail::SecondFactorAdded {
                username: username.clone(),
            },
            Mail::SecondFactorRemoved {
                username: username.clone(),
            },
            Mail::PasskeyAdded {
                username: username.clone(),
            },
            Mail::PasskeyRemoved {
                username: username.clone(),
            },
        ] {
            let composed = templates.compose(&mail).unwrap();
            assert!(
                composed.text.starts_with("Hello alice,"),
                "{mail:?}: {}",
                composed.text
            );
            assert!(
                composed.html.contains("<p>Hello alice,</p>"),
                "{mail:?}: {}",
                composed.html
            );
        }
        for (mail, link) in [
            (
                Mail::ResetPassword {
                    username: username.clone(),
                    token: token.clone(),
                },
                "https://login.example.com/reset?token=abc",
            ),
            (
                Mail::NewDeviceLogin {
                    username: username.clone(),
                    token: token.clone(),
                },
                "https://login.example.com/not-me?token=abc",
            ),
            (
                Mail::AccountLocked { username, token },
                "https://login.example.com/unlock?token=abc",
            ),
        ] {
            let composed = templates.compose(&mail).unwrap();
            assert!(composed.text.contains(link), "{}", composed.text);
            assert!(composed.html.contains(link), "{}", composed.html);
        }
    }
}
