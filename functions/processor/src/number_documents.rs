//! Each business number's own knowledge document and tools file: a number whose settings name a
//! `knowledge_uri` or `tools_uri` is grounded in that document, and offered those tools, instead
//! of the stack's (`KNOWLEDGE_URI`, `TOOLS_URI`). Each document is read like the stack's (cached,
//! its ETag checked every `KNOWLEDGE_REFRESH_SECONDS`), built on first use and kept for the
//! container's life.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shared::knowledge::{DocumentStore, DocumentUri, Knowledge};
use shared::tools::Toolbox;

/// Builds a number's toolbox from its tools file, with the stack's HTTP client and secret.
pub type MakeToolbox = Box<dyn Fn(DocumentStore) -> Toolbox + Send + Sync>;

/// The numbers' own documents, by URI.
pub struct NumberDocuments {
    aws: aws_config::SdkConfig,
    refresh: Duration,
    max_bytes: usize,
    make_toolbox: MakeToolbox,
    knowledge: Mutex<HashMap<DocumentUri, Arc<Knowledge<DocumentStore>>>>,
    tools: Mutex<HashMap<DocumentUri, Arc<Toolbox>>>,
}

impl NumberDocuments {
    /// Documents read through `aws`, checked every `refresh`, a knowledge document cut to
    /// `max_bytes`; a tools file made into a toolbox by `make_toolbox`. No I/O.
    pub fn new(
        aws: &aws_config::SdkConfig,
        refresh: Duration,
        max_bytes: usize,
        make_toolbox: MakeToolbox,
    ) -> Self {
        Self {
            aws: aws.clone(),
            refresh,
            max_bytes,
            make_toolbox,
            knowledge: Mutex::new(HashMap::new()),
            tools: Mutex::new(HashMap::new()),
        }
    }

    /// The knowledge document at `uri`.
    pub fn knowledge(&self, uri: &DocumentUri) -> Option<Arc<Knowledge<DocumentStore>>> {
        let mut shelf = self.knowledge.lock().ok()?;
        let entry = shelf.entry(uri.clone()).or_insert_with(|| {
            Arc::new(Knowledge::new(
                DocumentStore::new(uri, &self.aws),
                self.refresh,
                self.max_bytes,
            ))
        });
        Some(entry.clone())
    }

    /// The toolbox of the tools file at `uri`.
    pub fn toolbox(&self, uri: &DocumentUri) -> Option<Arc<Toolbox>> {
        let mut shelf = self.tools.lock().ok()?;
        let entry = shelf
            .entry(uri.clone())
            .or_insert_with(|| Arc::new((self.make_toolbox)(DocumentStore::new(uri, &self.aws))));
        Some(entry.clone())
    }
}
