//! The words of the mail the use cases send ([`portcullis_accounts::mail::Mail`]): askama
//! templates in `templates/mail`, a text and an HTML body each, with links built from
//! `server.public_url` (never from a request's `Host`, which its sender chooses).

use askama::Template;
use portcullis_accounts::mail::{Compose, Composed, Mail};

#[derive(Template)]
#[template(path = "mail/verify_address.txt")]
struct VerifyAddressText<'a> {
    username: &'a str,
    link: &'a str,
}

#[derive(Template)]
#[template(path = "mail/verify_address.html")]
struct VerifyAddressHtml<'a> {
    username: &'a str,
    link: &'a str,
}

#[derive(Template)]
#[template(path = "mail/address_changed.txt")]
struct AddressChangedText<'a> {
    username: &'a str,
}

#[derive(Template)]
#[template(path = "mail/address_changed.html")]
struct AddressChangedHtml<'a> {
    username: &'a str,
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
        let composed = match mail {
            Mail::VerifyAddress { username, token } => {
                let link = format!("{}/verify-email?token={token}", self.public_url);
                Composed {
                    subject: format!("Verify your address for {username}"),
                    text: VerifyAddressText {
                        username,
                        link: &link,
                    }
                    .render()?,
                    html: VerifyAddressHtml {
                        username,
                        link: &link,
                    }
                    .render()?,
                }
            }
            Mail::AddressChanged { username } => Composed {
                subject: format!("The address of {username} changed"),
                text: AddressChangedText { username }.render()?,
                html: AddressChangedHtml { username }.render()?,
            },
        };
        Ok(composed)
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
}
