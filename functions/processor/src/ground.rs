//! Step 6a, ground the persona: the system prompt of the model call, with the business's
//! knowledge document (`KNOWLEDGE_URI`) after the persona when one is configured and readable
//! (`shared::knowledge`: cached, checked for a change every `KNOWLEDGE_REFRESH_SECONDS`, cut to
//! `KNOWLEDGE_MAX_TOKENS`). A document that cannot be read costs no retry: the model is asked
//! with the persona alone, and an ERROR says why.

use std::borrow::Cow;

use std::sync::Arc;

use shared::knowledge::{DocumentStore, Knowledge, grounded_system};
use tokio::time::Instant;

use crate::{Behaviour, Processor};

impl<C, L, W, T> Processor<C, L, W, T> {
    /// The knowledge document `behaviour`'s number is grounded in: its own (`knowledge_uri`),
    /// else the stack's.
    fn knowledge_for(&self, behaviour: &Behaviour) -> Option<Arc<Knowledge<DocumentStore>>> {
        match (&behaviour.knowledge_uri, &self.number_documents) {
            (Some(uri), Some(documents)) => documents.knowledge(uri),
            _ => self.knowledge.clone(),
        }
    }

    /// The system prompt: the number's `persona`, grounded in the knowledge when there is some.
    /// Reading the knowledge gives up at `deadline`.
    pub(crate) async fn system_prompt<'a>(
        &self,
        behaviour: &'a Behaviour,
        deadline: Instant,
    ) -> Cow<'a, str> {
        let persona = &behaviour.system_prompt;
        let Some(knowledge) = self.knowledge_for(behaviour) else {
            return Cow::Borrowed(persona);
        };
        match knowledge.current(deadline).await {
            Some(text) => Cow::Owned(grounded_system(persona, &text)),
            None => Cow::Borrowed(persona),
        }
    }
}
