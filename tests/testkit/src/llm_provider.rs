//! One set of tests for every LLM provider, against a [`RecordingServer`] standing in for its
//! API. A provider's test file implements [`ProviderFixture`] (what its API looks like on the
//! wire) and expands [`llm_provider_cases!`](crate::llm_provider_cases) for the cases in
//! [`cases`]; it adds only the tests that are about that provider alone.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use shared::conversation::Role;
use shared::llm::{
    ChatModel, Completion, Llm, LlmError, LlmRefusal, LlmSettings, Prompt, PromptTurn, Provider,
    ToolCall, ToolDeclaration, ToolResult, ToolRound,
};
use shared::retry::Backoff;
use shared::secrets::{AppSecrets, SecretString, Secrets, SecretsError, StaticSecrets};
use tokio::time::Instant;

use crate::http_recorder::{Canned, RecordingServer};

/// The API key the tests' clients send.
pub const KEY: &str = "sk-test-123";

/// What a provider's API looks like on the wire, as the shared [`cases`] need to know it.
pub trait ProviderFixture {
    /// The provider under test.
    const PROVIDER: Provider;
    /// Appended to the server's URL to make the configured base URL, with the trailing slash a
    /// user might leave.
    const BASE_PATH: &'static str;
    /// The path a completion request goes to, for the model `test-model`.
    const PATH: &'static str;
    /// The header that carries the key, and its value for [`KEY`].
    const KEY_HEADER: (&'static str, &'static str);

    /// A 200 answer saying `text`, reporting 42 prompt tokens and 7 answer tokens.
    fn answer(text: &str) -> Canned;
    /// An error answer in the provider's own shape.
    fn error(status: u16, message: &str) -> Canned;
    /// The message of the [`LlmError::Status`] that [`Self::error`] gives.
    fn shown_error(status: u16, message: &str) -> String;
    /// The request body expected for [`prompt`].
    fn request_body() -> Value;
    /// Error answers of other shapes, each with the message read from it.
    fn odd_errors() -> Vec<(Canned, &'static str)>;
    /// Bodies of 200 answers without a usable text, each with the reason given.
    fn no_answers() -> Vec<(Value, &'static str)>;
    /// The body of a 200 answer of an unexpected shape, holding the word `Hello`.
    fn misshapen_answer() -> Value;
    /// Refusals for good in the provider's own shape (context length, content filter, unknown
    /// model, invalid request), each with how it is classified.
    fn refusals() -> Vec<(Canned, LlmRefusal)>;
}

/// Settings for a local server: a short backoff, three attempts, a generous timeout.
pub fn settings(base_url: &str) -> LlmSettings {
    LlmSettings {
        base_url: base_url.to_owned(),
        model: "test-model".to_owned(),
        timeout: Duration::from_secs(5),
        backoff: Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(50),
            max_attempts: 3,
        },
        guardrail: None,
        api_key_secret: None,
    }
}

/// Secrets holding `key` as `LLM_API_KEY`, or no key.
pub fn secrets(key: Option<&str>) -> Arc<StaticSecrets> {
    Arc::new(StaticSecrets(Arc::new(AppSecrets {
        llm_api_key: key.map(SecretString::new),
        ..AppSecrets::default()
    })))
}

/// Secrets that cannot be read.
pub struct FailingSecrets;

impl Secrets for FailingSecrets {
    async fn current(&self) -> Result<Arc<AppSecrets>, SecretsError> {
        Err(SecretsError::Fetch("Secrets Manager is down".to_owned()))
    }
}

/// A system prompt and a short alternating conversation.
pub fn prompt() -> Prompt {
    let turn = |role, text: &str| PromptTurn {
        role,
        text: text.to_owned(),
    };
    Prompt::new(
        "You are terse.",
        [
            turn(Role::User, "Hi"),
            turn(Role::Assistant, "Hello, how can I help?"),
            turn(Role::User, "What is 2+2?"),
        ],
    )
}

/// The tool the tool-use tests offer: an order's status by its id.
pub fn order_status_tool() -> ToolDeclaration {
    ToolDeclaration {
        name: "order_status".to_owned(),
        description: "The status of an order, by its id.".to_owned(),
        parameters: serde_json::json!({
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"]
        }),
    }
}

/// The call of [`order_status_tool`] for order A-17, with the provider's id `id`.
pub fn order_status_call(id: &str) -> ToolCall {
    ToolCall {
        id: id.to_owned(),
        name: "order_status".to_owned(),
        arguments: serde_json::json!({"order_id": "A-17"}),
        signature: None,
    }
}

/// [`prompt`] offering [`order_status_tool`]; with `round`, after a round in which the model
/// called it (`call`) and got `{"status":"shipped"}`.
pub fn tool_prompt(round: Option<ToolCall>) -> Prompt {
    let rounds = round
        .map(|call| ToolRound {
            text: None,
            results: vec![ToolResult {
                call_id: call.id.clone(),
                name: call.name.clone(),
                content: r#"{"status":"shipped"}"#.to_owned(),
                is_error: false,
            }],
            calls: vec![call],
        })
        .into_iter()
        .collect();
    prompt().with_tools(vec![order_status_tool()], rounds)
}

/// A deadline `seconds` from now.
pub fn in_seconds(seconds: u64) -> Instant {
    Instant::now() + Duration::from_secs(seconds)
}

/// A server that answers "Hello!" unless scripted otherwise.
pub async fn server<P: ProviderFixture>() -> RecordingServer {
    RecordingServer::start(|_| P::answer("Hello!")).await
}

/// A client of `P` for `server`, with `key` in its secrets.
pub fn chat<P: ProviderFixture>(
    server: &RecordingServer,
    key: Option<&str>,
) -> ChatModel<StaticSecrets> {
    chat_with::<P, _>(
        settings(&format!("{}{}", server.url, P::BASE_PATH)),
        secrets(key),
    )
}

/// A client of `P` with `settings` and `secrets`.
pub fn chat_with<P: ProviderFixture, S>(settings: LlmSettings, secrets: Arc<S>) -> ChatModel<S> {
    let aws = aws_config::SdkConfig::builder().build();
    ChatModel::new(P::PROVIDER, reqwest::Client::new(), &aws, settings, secrets)
}

/// Asks `chat` to complete [`prompt`], with ten seconds to do it.
pub async fn ask(chat: &impl Llm) -> Result<Completion, LlmError> {
    chat.complete(&prompt(), in_seconds(10)).await
}

/// Asks `chat` `times` times and gives the error of each, panicking on an answer.
async fn errors(chat: &impl Llm, times: usize) -> Vec<LlmError> {
    let mut errors = Vec::new();
    for _ in 0..times {
        match ask(chat).await {
            Err(error) => errors.push(error),
            Ok(completion) => panic!("unexpected {completion:?}"),
        }
    }
    errors
}

/// Expands to one `#[tokio::test]` for each case in [`cases`], run against the given
/// [`ProviderFixture`].
#[macro_export]
macro_rules! llm_provider_cases {
    ($fixture:ty) => {
        $crate::llm_provider_cases!(
            @each $fixture;
            sends_the_prompt_with_the_key,
            retries_server_errors_until_an_answer,
            waits_as_long_as_retry_after_asks,
            does_not_retry_what_would_fail_again,
            reads_error_bodies_of_other_shapes,
            an_answer_without_text_is_no_answer,
            an_unexpected_body_is_a_bad_response,
            times_out_each_attempt_and_gives_up_before_the_deadline,
            an_attempt_never_outlives_the_deadline,
            makes_no_request_once_the_deadline_has_passed,
            makes_no_retry_that_could_not_start_before_the_deadline,
            a_connection_failure_is_a_transport_error_without_secrets,
            errors_never_show_the_key_or_the_prompt,
            a_secrets_failure_sends_nothing,
            refusals_for_good_are_classified_and_not_retried,
            a_retry_after_of_u64_max_ends_the_retries_without_panicking,
        );
    };
    (@each $fixture:ty; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                $crate::llm_provider::cases::$case::<$fixture>().await;
            }
        )*
    };
}

/// The cases every provider passes.
pub mod cases {
    use super::*;

    /// The prompt goes out in the provider's shape, the key in its header and nowhere else.
    pub async fn sends_the_prompt_with_the_key<P: ProviderFixture>() {
        let server = server::<P>().await;
        let completion = ask(&chat::<P>(&server, Some(KEY))).await.unwrap();
        assert_eq!(
            completion,
            Completion {
                tool_calls: Vec::new(),
                text: "Hello!".into(),
                input_tokens: Some(42),
                output_tokens: Some(7),
            }
        );

        let requests = server.requests();
        assert_eq!(requests.len(), 1);
        let request = &requests[0];
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, P::PATH, "no key in the URL");
        let (key_header, key_value) = P::KEY_HEADER;
        assert_eq!(request.header(key_header), Some(key_value));
        for (name, value) in &request.headers {
            assert!(
                name == key_header || !value.contains(KEY),
                "the key in {name}"
            );
        }
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(request.json(), P::request_body());
    }

    /// 5xx answers are retried.
    pub async fn retries_server_errors_until_an_answer<P: ProviderFixture>() {
        let server = server::<P>().await;
        server.script([P::error(500, "boom"), P::error(503, "overloaded")]);
        let completion = ask(&chat::<P>(&server, Some(KEY))).await.unwrap();
        assert_eq!(completion.text, "Hello!");
        assert_eq!(server.requests().len(), 3);
    }

    /// A 429's `Retry-After` sets the wait before the next attempt.
    pub async fn waits_as_long_as_retry_after_asks<P: ProviderFixture>() {
        let server = server::<P>().await;
        server.script([P::error(429, "Rate limit reached").with_header("retry-after", "1")]);
        let started = Instant::now();
        let completion = ask(&chat::<P>(&server, Some(KEY))).await.unwrap();
        assert_eq!(completion.text, "Hello!");
        assert_eq!(server.requests().len(), 2);
        // The test backoff is milliseconds; only Retry-After explains a full second.
        assert!(started.elapsed() >= Duration::from_millis(950));
    }

    /// 400, 401 and 403 are final.
    pub async fn does_not_retry_what_would_fail_again<P: ProviderFixture>() {
        for status in [400, 401, 403] {
            let server = server::<P>().await;
            server.script([P::error(status, "nope")]);
            let result = ask(&chat::<P>(&server, Some(KEY))).await;
            assert_eq!(
                result,
                Err(LlmError::Status {
                    status,
                    message: P::shown_error(status, "nope"),
                    retry_after: None,
                })
            );
            assert_eq!(server.requests().len(), 1, "status {status}");
        }
    }

    /// An error body that is not the provider's usual one still yields a message.
    pub async fn reads_error_bodies_of_other_shapes<P: ProviderFixture>() {
        let server = server::<P>().await;
        let (answers, expected): (Vec<Canned>, Vec<&str>) = P::odd_errors().into_iter().unzip();
        let statuses: Vec<u16> = answers.iter().map(|answer| answer.status).collect();
        server.script(answers);
        let chat = chat::<P>(&server, Some(KEY));
        let read: Vec<(u16, String)> = errors(&chat, expected.len())
            .await
            .into_iter()
            .map(|error| match error {
                LlmError::Status {
                    status,
                    message,
                    retry_after: None,
                } => (status, message),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        let expected: Vec<(u16, String)> = statuses
            .into_iter()
            .zip(expected.into_iter().map(str::to_owned))
            .collect();
        assert_eq!(read, expected);
    }

    /// A 200 without a usable text is [`LlmError::NoAnswer`], and is not retried.
    pub async fn an_answer_without_text_is_no_answer<P: ProviderFixture>() {
        let server = server::<P>().await;
        let (bodies, expected): (Vec<Value>, Vec<&str>) = P::no_answers().into_iter().unzip();
        server.script(bodies.into_iter().map(|body| Canned::json(200, body)));
        let chat = chat::<P>(&server, Some(KEY));
        let reasons: Vec<String> = errors(&chat, expected.len())
            .await
            .into_iter()
            .map(|error| match error {
                LlmError::NoAnswer(reason) => reason,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(reasons, expected);
        assert_eq!(
            server.requests().len(),
            expected.len(),
            "a 200 is not retried"
        );
    }

    /// A 200 of the wrong shape is [`LlmError::BadResponse`], which does not quote the body.
    pub async fn an_unexpected_body_is_a_bad_response<P: ProviderFixture>() {
        let server = RecordingServer::start(|_| Canned::json(200, P::misshapen_answer())).await;
        let result = ask(&chat::<P>(&server, Some(KEY))).await;
        assert!(
            matches!(&result, Err(LlmError::BadResponse(m)) if !m.contains("Hello")),
            "{result:?}"
        );
    }

    /// Each attempt has the configured timeout; the last one ends before the deadline.
    pub async fn times_out_each_attempt_and_gives_up_before_the_deadline<P: ProviderFixture>() {
        let server =
            RecordingServer::start(|_| P::answer("late").after(Duration::from_secs(5))).await;
        let mut settings = settings(&server.url);
        settings.timeout = Duration::from_millis(100);
        let deadline = in_seconds(4);
        let result = chat_with::<P, _>(settings, secrets(Some(KEY)))
            .complete(&prompt(), deadline)
            .await;
        assert_eq!(result, Err(LlmError::Timeout));
        assert_eq!(server.requests().len(), 3, "every attempt was made");
        assert!(Instant::now() < deadline);
    }

    /// The deadline cuts an attempt short of its timeout.
    pub async fn an_attempt_never_outlives_the_deadline<P: ProviderFixture>() {
        let server =
            RecordingServer::start(|_| P::answer("late").after(Duration::from_secs(30))).await;
        let mut settings = settings(&server.url);
        settings.timeout = Duration::from_secs(60);
        let started = Instant::now();
        let result = chat_with::<P, _>(settings, secrets(Some(KEY)))
            .complete(&prompt(), started + Duration::from_millis(300))
            .await;
        assert_eq!(result, Err(LlmError::Timeout));
        // Bounded by the 300 ms deadline, not by the 60 s timeout or the 30 s server.
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    /// Nothing is sent once the deadline has passed.
    pub async fn makes_no_request_once_the_deadline_has_passed<P: ProviderFixture>() {
        let server = server::<P>().await;
        let result = chat::<P>(&server, Some(KEY))
            .complete(&prompt(), Instant::now())
            .await;
        assert_eq!(result, Err(LlmError::Timeout));
        assert!(server.requests().is_empty());
    }

    /// A `Retry-After` past the deadline ends the call with the error that asked for it.
    pub async fn makes_no_retry_that_could_not_start_before_the_deadline<P: ProviderFixture>() {
        let server = server::<P>().await;
        server.script([P::error(503, "overloaded").with_header("retry-after", "30")]);
        let result = chat::<P>(&server, Some(KEY))
            .complete(&prompt(), in_seconds(5))
            .await;
        assert!(
            matches!(
                result,
                Err(LlmError::Status {
                    status: 503,
                    retry_after: Some(d),
                    ..
                }) if d == Duration::from_secs(30)
            ),
            "{result:?}"
        );
        assert_eq!(server.requests().len(), 1);
    }

    /// A refused connection is [`LlmError::Transport`], naming neither the key nor the prompt.
    pub async fn a_connection_failure_is_a_transport_error_without_secrets<P: ProviderFixture>() {
        // A port that was just free: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let base_url = format!("http://127.0.0.1:{port}{}", P::BASE_PATH);
        let chat = chat_with::<P, _>(settings(&base_url), secrets(Some(KEY)));
        let result = ask(&chat).await;
        let Err(LlmError::Transport(message)) = &result else {
            panic!("unexpected {result:?}");
        };
        assert!(!message.contains(KEY), "{message}");
        assert!(!message.contains("2+2"), "{message}");
    }

    /// A provider that echoes the key gets it redacted.
    pub async fn errors_never_show_the_key_or_the_prompt<P: ProviderFixture>() {
        let server = server::<P>().await;
        server.script([P::error(
            401,
            &format!("Incorrect API key provided: {KEY}."),
        )]);
        let result = ask(&chat::<P>(&server, Some(KEY))).await;
        let error = result.unwrap_err();
        let shown = format!("{error} {error:?}");
        assert!(!shown.contains(KEY), "{shown}");
        assert!(!shown.contains("2+2"), "{shown}");
        assert!(
            shown.contains("Incorrect API key provided: <redacted>."),
            "{shown}"
        );
    }

    /// Unreadable secrets are [`LlmError::Secrets`], before any request.
    pub async fn a_secrets_failure_sends_nothing<P: ProviderFixture>() {
        let server = server::<P>().await;
        let chat = chat_with::<P, _>(settings(&server.url), Arc::new(FailingSecrets));
        let result = ask(&chat).await;
        assert!(
            matches!(result, Err(LlmError::Secrets(SecretsError::Fetch(_)))),
            "{result:?}"
        );
        assert!(server.requests().is_empty());
    }

    /// A refusal for good (400/404/422) is classified by its cause and not retried.
    pub async fn refusals_for_good_are_classified_and_not_retried<P: ProviderFixture>() {
        for (answer, expected) in P::refusals() {
            let server = server::<P>().await;
            let status = answer.status;
            server.script([answer]);
            let result = ask(&chat::<P>(&server, Some(KEY))).await;
            let refusal = result.as_ref().err().and_then(LlmError::refusal);
            assert_eq!(refusal, Some(expected), "{status}: {result:?}");
            assert_eq!(server.requests().len(), 1, "{status}: not retried");
        }
    }

    /// A `Retry-After` of `u64::MAX` seconds neither panics nor waits: the retry could not
    /// start before the deadline.
    pub async fn a_retry_after_of_u64_max_ends_the_retries_without_panicking<P: ProviderFixture>() {
        let server = server::<P>().await;
        server.script([
            P::error(503, "overloaded").with_header("retry-after", "18446744073709551615")
        ]);
        let started = Instant::now();
        let result = ask(&chat::<P>(&server, Some(KEY))).await;
        assert!(
            matches!(
                result,
                Err(LlmError::Status {
                    status: 503,
                    retry_after: Some(_),
                    ..
                })
            ),
            "{result:?}"
        );
        assert_eq!(server.requests().len(), 1);
        assert!(started.elapsed() < Duration::from_secs(30), "no wait");
    }
}
