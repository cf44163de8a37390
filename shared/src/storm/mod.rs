//! Storm control for alert mails: the same fingerprint mails at most once per window; alerts
//! that arrive while a window is open are counted, and the next mail says how many were held
//! back. The [`StormControl`] port and its DynamoDB adapter (a conditional write with a TTL).

pub mod dynamodb;

use std::future::Future;
use std::time::Duration;

/// What to do with an alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Mail it: a window was opened for its fingerprint.
    Send {
        /// Alerts of this fingerprint held back since the previous mail, to report.
        held_back: u64,
        /// When the previous mail of this fingerprint went out (seconds since the epoch).
        previous_mail_at: Option<i64>,
        /// Identifies the window, to give it back with [`StormControl::give_back`].
        token: String,
    },
    /// Do not mail it: a window is open, and the alerts were counted as held back.
    Hold,
}

/// Why storm control could not decide.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StormError {
    /// The store could not be reached or refused the call.
    #[error("the alert store is unavailable: {0}")]
    Unavailable(String),
}

/// Decides which alerts are mailed.
pub trait StormControl: Send + Sync {
    /// Opens a window of `window` for `fingerprint` if none is open at `now` (and returns
    /// [`Verdict::Send`]); otherwise counts `count` alerts as held back ([`Verdict::Hold`]).
    fn admit(
        &self,
        fingerprint: &str,
        count: u64,
        now: i64,
        window: Duration,
    ) -> impl Future<Output = Result<Verdict, StormError>> + Send;

    /// Gives back a window that [`StormControl::admit`] opened with `token` when its mail could
    /// not be sent: the window closes, and `held_back` and `previous_mail_at` from the verdict
    /// are put back, so that the retry's mail reports them.
    fn give_back(
        &self,
        fingerprint: &str,
        token: &str,
        held_back: u64,
        previous_mail_at: Option<i64>,
    ) -> impl Future<Output = Result<(), StormError>> + Send;
}
