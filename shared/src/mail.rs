//! Sending mail: the [`Mailer`] port and its Amazon SES (v2) adapter. Mails go out as raw MIME
//! (`multipart/alternative` with a text and an HTML part), built by [`to_mime`].

use std::future::Future;

/// A mail to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// The sender address (`ERROR_FROM_EMAIL`), verified in SES.
    pub from: String,
    /// The recipients (`ERROR_LOG_EMAIL`).
    pub to: Vec<String>,
    /// Where replies go (`REPLY_TO_EMAIL`), when set.
    pub reply_to: Option<String>,
    /// The subject, one line.
    pub subject: String,
    /// The plain-text body.
    pub text: String,
    /// The HTML body.
    pub html: String,
}

/// Why a mail was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailError {
    /// SES refused the mail (an unverified sender, a suppressed recipient, the sandbox…).
    #[error("SES refused the mail: {0}")]
    Rejected(String),
    /// SES could not be reached or failed.
    #[error("SES is unavailable: {0}")]
    Unavailable(String),
}

/// Sends mail.
pub trait Mailer: Send + Sync {
    /// Sends `mail`; returns the provider's message id.
    fn send(&self, mail: &Mail) -> impl Future<Output = Result<String, MailError>> + Send;
}
