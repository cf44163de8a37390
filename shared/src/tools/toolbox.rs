//! The tools as a function holds them: the tools file's catalog, the HTTP client that calls
//! them and the app secret their headers read, put together at each use into the tools to offer
//! and the runner that calls them.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::time::Instant;

use super::{HttpTools, ToolDeclaration, Tools, ToolsCatalog};
use crate::knowledge::DocumentStore;
use crate::log_event::LogEvent;
use crate::secrets::{AppSecrets, Secrets, SecretsError};

/// Reads the current app secret, whatever the [`Secrets`] behind it.
type SecretsReader =
    Arc<dyn Fn() -> BoxFuture<'static, Result<Arc<AppSecrets>, SecretsError>> + Send + Sync>;

/// The tools file (`TOOLS_URI`), read and refreshed as the catalog does, with the client and
/// the secrets that calling them needs.
pub struct Toolbox {
    catalog: ToolsCatalog<DocumentStore>,
    client: reqwest::Client,
    secrets: SecretsReader,
    max_rounds: u32,
}

/// The tools of one invocation: what the model is offered and how its calls are run.
pub struct Offered {
    /// The tools, as the file declares them (their side effects, say).
    pub tools: Arc<Tools>,
    /// What the model is offered.
    pub declarations: Vec<ToolDeclaration>,
    /// Runs the model's calls.
    pub runner: HttpTools,
}

impl Toolbox {
    /// The tools of the file at `source`, checked for a change every `refresh`, called with
    /// `client` (build it with [`super::configure_client`]) and the secrets of `secrets`, in at
    /// most `max_rounds` rounds per answer. No I/O.
    pub fn new<S: Secrets + 'static>(
        source: DocumentStore,
        refresh: Duration,
        client: reqwest::Client,
        secrets: Arc<S>,
        max_rounds: u32,
    ) -> Self {
        let secrets: SecretsReader = Arc::new(move || {
            let secrets = secrets.clone();
            Box::pin(async move { secrets.current().await })
        });
        Self {
            catalog: ToolsCatalog::new(source, refresh),
            client,
            secrets,
            max_rounds,
        }
    }

    /// How many rounds of calls one answer may make (`TOOLS_MAX_ROUNDS`).
    pub fn max_rounds(&self) -> u32 {
        self.max_rounds
    }

    /// The tools to offer now, giving up at `deadline`; `None` when there are none (no valid
    /// file: an ERROR said why) or the secret cannot be read (a WARN says so): the model is then
    /// asked without tools.
    pub async fn offer(&self, deadline: Instant) -> Option<Offered> {
        let tools = self.catalog.current(deadline).await?;
        if tools.is_empty() {
            return None;
        }
        let secrets = match tokio::time::timeout_at(deadline, (self.secrets)()).await {
            Ok(Ok(secrets)) => secrets,
            Ok(Err(error)) => return unavailable(&error.to_string()),
            Err(_) => return unavailable("the secret was not read in time"),
        };
        Some(Offered {
            declarations: tools.declarations(),
            runner: HttpTools::new(self.client.clone(), tools.clone(), secrets),
            tools,
        })
    }
}

fn unavailable(error: &str) -> Option<Offered> {
    tracing::warn!(event = LogEvent::ToolsUnavailable.as_str(), error = %error,
        "the app secret the tools' headers read is unavailable; answering without tools");
    None
}

impl Offered {
    /// Whether the tool named `name` has side effects; an unknown name has none (it is never
    /// called).
    pub fn has_side_effects(&self, name: &str) -> bool {
        self.tools.get(name).is_some_and(super::Tool::side_effects)
    }
}
