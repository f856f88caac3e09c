//! How mail leaves: `log` (the embedded default: the whole message, link included, goes to the
//! log, so a service with no SMTP server still works) or `smtp` (lettre, async on tokio, with
//! rustls: `smtp://` plain, `smtp://...?tls=required` STARTTLS, `smtps://` implicit TLS;
//! credentials in the URL's user and password).

use anyhow::Context;
use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::Composed;
use crate::settings::{MailSettings, MailTransport};

/// Where messages go.
pub enum Transport {
    /// Into the log, at INFO on the `mail` target.
    Log,
    /// To an SMTP server.
    Smtp {
        /// The connection (a pool of them).
        mailer: AsyncSmtpTransport<Tokio1Executor>,
        /// The `From` of every message.
        from: Mailbox,
    },
}

impl Transport {
    /// The transport `settings` name; a setting that cannot work stops start-up naming it.
    pub fn from_settings(settings: &MailSettings) -> anyhow::Result<Self> {
        match settings.transport {
            MailTransport::Log => Ok(Transport::Log),
            MailTransport::Smtp => {
                let url = settings
                    .smtp_url
                    .as_deref()
                    .context("mail.smtp_url must be set with mail.transport = \"smtp\"")?;
                let mailer = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .context("mail.smtp_url: not an SMTP URL (smtp://host:port, smtps://...)")?
                    .timeout(Some(std::time::Duration::from_secs(30)))
                    .build();
                let from = settings
                    .from
                    .parse()
                    .context("mail.from: not a mailbox (`Name <address>` or `address`)")?;
                Ok(Transport::Smtp { mailer, from })
            }
        }
    }

    /// Sends `message` to `to`; the error says why not.
    pub async fn send(&self, to: &str, message: &Composed) -> anyhow::Result<()> {
        match self {
            Transport::Log => {
                tracing::info!(
                    target: "mail",
                    to,
                    subject = message.subject,
                    body = message.text,
                    "mail (mail.transport = \"log\": not sent)"
                );
                Ok(())
            }
            Transport::Smtp { mailer, from } => {
                let to: Mailbox = to.parse().context("the recipient is not an address")?;
                let email = Message::builder()
                    .from(from.clone())
                    .to(to)
                    .subject(&message.subject)
                    .multipart(MultiPart::alternative_plain_html(
                        message.text.clone(),
                        message.html.clone(),
                    ))
                    .context("building the message")?;
                mailer.send(email).await.context("sending by SMTP")?;
                Ok(())
            }
        }
    }
}
