//! The local stack: the functions' real binaries under the local Lambda runtime, against the
//! template's resources in moto, with this process playing API Gateway, the SQS event sources,
//! Meta's Graph API and (without an `LLM_API_KEY`) an offline stand-in for the LLM.
//!
//! One HTTP server carries it all:
//! - `GET|POST /webhook`: API Gateway in front of the webhook function;
//! - `POST /graph/{version}/{phone_number_id}/messages`: Meta's Graph API, as the processor uses it;
//! - `GET /graph/{version}/{media-id}`, `GET /graph-media/{token}`: its media, in two steps;
//! - `POST /llm/v1/chat/completions`, `POST /transcription/v1/audio/transcriptions`: the
//!   offline LLM and transcription stand-ins (OpenAI-compatible), when no real model is set;
//! - `POST /bedrock/model/{model-id}/converse`: the offline stand-in for Bedrock's Converse,
//!   for `LLM_PROVIDER=bedrock` without AWS credentials ([`bedrock`]);
//! - `GET /shop/orders/{id}`, `GET /shop/products`, `POST /shop/carts/{id}/items`: the example
//!   shop's API, which the processor's tools call (unless `LOCAL_EXAMPLE=none`; [`shop`]);
//! - `POST /api/send`, `POST /api/media`, `GET /api/events`: what a WhatsApp user (or the
//!   handoff agent, [`AGENT_NUMBER`]) does and sees, for the simulator page and the terminal
//!   mode; `GET /api/deliveries`: the messages the simulator delivered to the webhook.
//!
//! This module wires the parts: [`moto`] (the server), [`event_sources`] (the SQS pollers),
//! [`stand_ins`] (API Gateway, the Graph API's messages), [`media`] (the files users send),
//! [`offline`] (the model stand-ins), [`shop`] (the example: its FAQ, its tools file and its
//! API), [`numbers`] (the business numbers and their settings items) and [`simulator`] (the
//! user's side).

pub mod bedrock;
pub mod event_sources;
pub mod media;
mod moto;
pub mod numbers;
mod offline;
pub mod shop;
mod simulator;
mod stand_ins;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::resources::{LOCAL_SECRET, Stack};
use crate::runtime::{FunctionSpec, LambdaFunction};
pub use offline::MODEL_REQUEST_LIMIT;
use shop::{Example, ExampleFiles, Shop, ShopCall};
use simulator::Simulator;
pub use simulator::{Event, Location, Upload};
pub use stand_ins::LlmMode;

/// The business phone number the simulator's users write to by default.
pub const PHONE_NUMBER_ID: &str = "106540352242922";
/// The second business number they can write to: Café Luna, with its own persona ([`numbers`]).
pub const SECOND_NUMBER_ID: &str = "106540352242923";
/// The WhatsApp number of both numbers' handoff agent (`handoff_agent_number`), whose phone the
/// simulator's agent panel plays. Not one the page gives its users (it gives `1555000…`).
pub const AGENT_NUMBER: &str = "15559990000";
/// How long one function invocation may take locally.
const INVOKE_TIMEOUT: Duration = Duration::from_secs(120);

/// A running local stack. Dropping it stops the functions (and the moto server it started).
pub struct LocalStack {
    /// The simulator's URL.
    pub url: String,
    simulator: Arc<Simulator>,
    shop: Option<Arc<Shop>>,
    _functions: Vec<Arc<LambdaFunction>>,
    _moto: Option<tokio::process::Child>,
    // Last: the files stay until the functions that read them have stopped.
    _example: Option<ExampleFiles>,
}

/// How to start the local stack.
#[derive(Debug, Clone)]
pub struct Options {
    /// An already running moto server to use; otherwise one is started.
    pub aws_endpoint: Option<String>,
    /// Where `moto_server` is, to start one.
    pub moto_server: PathBuf,
    /// The moto port to start it on.
    pub moto_port: u16,
    /// The simulator's port (0 for any).
    pub http_port: u16,
    /// Where the functions' binaries are.
    pub binaries: PathBuf,
    /// Where the functions' logs go.
    pub log_dir: PathBuf,
    /// The stack name (resource names derive from it).
    pub stack_name: String,
    /// Which LLM answers.
    pub llm: LlmMode,
    /// The example the processor is given (`LOCAL_EXAMPLE`).
    pub example: Example,
}

/// The three functions, started.
struct Functions {
    webhook: LambdaFunction,
    processor: Arc<LambdaFunction>,
    alerter: Arc<LambdaFunction>,
}

impl LocalStack {
    /// Starts everything and returns once the simulator answers.
    pub async fn start(options: Options) -> Result<Self, String> {
        std::fs::create_dir_all(&options.log_dir)
            .map_err(|e| format!("create {}: {e}", options.log_dir.display()))?;
        let (endpoint, moto) = match &options.aws_endpoint {
            Some(endpoint) => (endpoint.clone(), None),
            None => {
                let child = moto::start(&options.moto_server, options.moto_port).await?;
                (
                    format!("http://127.0.0.1:{}", options.moto_port),
                    Some(child),
                )
            }
        };
        let aws = moto::aws_config(&endpoint, options.llm.region()).await;
        let stack = Stack::create(aws.clone(), &options.stack_name, "oncall@example.com").await;
        prepare_resources(&aws, &stack, &options.llm).await?;
        let business_numbers = numbers::seeded(options.example);
        numbers::seed(&aws, &stack.resolver.refs["Table"], &business_numbers).await?;

        let listener = tokio::net::TcpListener::bind(("127.0.0.1", options.http_port))
            .await
            .map_err(|e| format!("bind port {}: {e}", options.http_port))?;
        let base_url = format!(
            "http://{}",
            listener.local_addr().map_err(|e| e.to_string())?
        );
        let example = example_files(&options, &base_url)?;
        let functions =
            start_functions(&options, &stack, &endpoint, &base_url, example.as_ref()).await?;
        let simulator = Arc::new(Simulator::new(
            functions.webhook,
            base_url.clone(),
            options.llm.clone(),
            options.example,
            business_numbers,
        ));
        let shop = example
            .as_ref()
            .map(|_| example_shop(&simulator, functions.processor.name()));
        serve(listener, &simulator, shop.as_ref(), options.llm.region());

        let sqs = aws_sdk_sqs::Client::new(&aws);
        for (queue, function) in [
            ("InboundQueue", &functions.processor),
            ("InboundDeadLetterQueue", &functions.alerter),
            ("AlertRetryQueue", &functions.alerter),
        ] {
            tokio::spawn(event_sources::poll(
                sqs.clone(),
                stack.resolver.refs[queue].clone(),
                function.clone(),
                simulator.clone(),
            ));
        }
        tokio::spawn(simulator::watch_mails(endpoint, simulator.clone()));
        let max_receive: u32 =
            stack.template.properties("InboundQueue")["RedrivePolicy"]["maxReceiveCount"]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(5);
        simulator.push(
            "notice",
            None,
            json!({"text": format!("Local stack up: {}; {}; dead letters after {max_receive} receives.",
                options.llm.describe(), options.example.describe())}),
        );
        Ok(Self {
            url: base_url,
            simulator,
            shop,
            _functions: vec![functions.processor, functions.alerter],
            _moto: moto,
            _example: example,
        })
    }

    /// The calls the example shop's stand-in answered, in order (none without the example).
    pub fn shop_calls(&self) -> Vec<ShopCall> {
        self.shop
            .as_ref()
            .map(|shop| shop.calls())
            .unwrap_or_default()
    }

    /// The business numbers seeded at start, the default ([`PHONE_NUMBER_ID`]) first.
    pub fn numbers(&self) -> &[numbers::Number] {
        self.simulator.numbers()
    }

    /// Sends `text` as `user` (named `name`) would from WhatsApp to the default number
    /// ([`PHONE_NUMBER_ID`]); returns the webhook's status.
    pub async fn send(&self, user: &str, name: &str, text: &str) -> u16 {
        self.send_to(PHONE_NUMBER_ID, user, name, text).await
    }

    /// Sends `text` as `user` (named `name`) would to the business number `number` (its
    /// `phone_number_id`); returns the webhook's status.
    pub async fn send_to(&self, number: &str, user: &str, name: &str, text: &str) -> u16 {
        self.simulator.send_as_user(number, user, name, text).await
    }

    /// Sends a file as `user` (named `name`) would to `number`; returns the webhook's status,
    /// or why the file was not taken.
    pub async fn send_file(
        &self,
        number: &str,
        user: &str,
        name: &str,
        upload: Upload,
    ) -> Result<u16, media::UploadError> {
        self.simulator
            .send_file_as_user(number, user, name, upload)
            .await
    }

    /// Shares a location as `user` (named `name`) would with `number`; returns the webhook's
    /// status.
    pub async fn send_location(
        &self,
        number: &str,
        user: &str,
        name: &str,
        location: Location,
    ) -> u16 {
        self.simulator
            .send_location_as_user(number, user, name, location)
            .await
    }

    /// Delivers the last webhook body again, as Meta does when it misses an answer.
    pub async fn resend(&self) -> Option<u16> {
        let body = self.simulator.last_delivery()?;
        Some(self.simulator.deliver(body).await)
    }

    /// The events after `since`.
    pub fn events_since(&self, since: u64) -> Vec<Event> {
        self.simulator.events_since(since)
    }
}

/// The example's files, for the shop stand-in served at `base_url`, in a directory of this
/// stack's; none without the example.
fn example_files(options: &Options, base_url: &str) -> Result<Option<ExampleFiles>, String> {
    if options.example == Example::None {
        return Ok(None);
    }
    let dir = std::env::temp_dir().join(format!(
        "local-stack-{}-{}",
        options.stack_name,
        std::process::id()
    ));
    ExampleFiles::write(&dir, &format!("{base_url}{}", shop::PREFIX)).map(Some)
}

/// The example shop's stand-in, each of its calls shown in the simulator in the conversations
/// whose messages `function` (the processor) was handling when it was made.
fn example_shop(simulator: &Arc<Simulator>, function: &str) -> Arc<Shop> {
    let shop = Arc::new(Shop::new());
    let simulator = simulator.clone();
    let function = function.to_owned();
    shop.on_call(move |call| simulator.push_tool_call(call, simulator.in_flight(&function)));
    shop
}

/// Serves the simulator, the stand-ins for `region` and, with the example, the `shop` on
/// `listener`.
fn serve(
    listener: tokio::net::TcpListener,
    simulator: &Arc<Simulator>,
    shop: Option<&Arc<Shop>>,
    region: &str,
) {
    let mut app = simulator::routes()
        .merge(stand_ins::routes())
        .merge(offline::routes())
        .merge(offline::bedrock_routes(region.to_owned()))
        .with_state(simulator.clone())
        .merge(media::routes().with_state(simulator.media.clone()));
    if let Some(shop) = shop {
        app = app.merge(shop::routes(shop.clone()));
    }
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
}

/// What the stack's resources need beyond the template: a verified SES sender, and the real
/// LLM's key in the secret when a real LLM answers.
async fn prepare_resources(
    aws: &aws_config::SdkConfig,
    stack: &Stack,
    llm: &LlmMode,
) -> Result<(), String> {
    aws_sdk_sesv2::Client::new(aws)
        .create_email_identity()
        .email_identity("alerts@example.com")
        .send()
        .await
        .map_err(|e| format!("SES: {e}"))?;
    if let LlmMode::Real { api_key, .. } = llm {
        let mut secret: Value = json!({});
        for (key, value) in LOCAL_SECRET {
            secret[key] = json!(value);
        }
        secret["LLM_API_KEY"] = json!(api_key);
        aws_sdk_secretsmanager::Client::new(aws)
            .put_secret_value()
            .secret_id(&stack.resolver.refs["AppSecret"])
            .secret_string(secret.to_string())
            .send()
            .await
            .map_err(|e| format!("Secrets Manager: {e}"))?;
    }
    Ok(())
}

/// Starts the three functions with the environment the template gives them, pointed at moto
/// (`endpoint`) and, for the processor, at the stand-ins served at `base_url`.
async fn start_functions(
    options: &Options,
    stack: &Stack,
    endpoint: &str,
    base_url: &str,
    example: Option<&ExampleFiles>,
) -> Result<Functions, String> {
    let aws_env = [
        ("AWS_ENDPOINT_URL", endpoint.to_owned()),
        ("AWS_ACCESS_KEY_ID", "local".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "local".to_owned()),
        ("AWS_REGION", options.llm.region().to_owned()),
        ("AWS_LAMBDA_LOG_LEVEL", "info".to_owned()),
    ];
    let start = |name: &str, logical_id: &str, overrides: &[(&str, String)]| {
        let mut environment: BTreeMap<String, String> = stack.environment(logical_id);
        for (key, value) in aws_env.iter().chain(overrides.iter()) {
            environment.insert((*key).to_owned(), value.clone());
        }
        LambdaFunction::start(FunctionSpec {
            name: name.to_owned(),
            binary: options.binaries.join(name),
            environment,
            log_file: Some(options.log_dir.join(format!("{name}.log"))),
        })
    };
    let mut processor_env = processor_overrides(&options.llm, base_url).await?;
    if let Some(example) = example {
        processor_env.push(("KNOWLEDGE_URI", example.knowledge_uri.clone()));
        processor_env.push(("TOOLS_URI", example.tools_uri.clone()));
    }
    let failed = |e: std::io::Error| e.to_string();
    let webhook = start("webhook", "WebhookFunction", &[])
        .await
        .map_err(failed)?;
    let processor = start("processor", "ProcessorFunction", &processor_env)
        .await
        .map_err(failed)?;
    let alerter = start("alerter", "AlerterFunction", &[])
        .await
        .map_err(failed)?;
    Ok(Functions {
        webhook,
        processor: Arc::new(processor),
        alerter: Arc::new(alerter),
    })
}

/// The processor's environment beyond the template's: the Graph API stand-in, and either the
/// offline LLM and transcription stand-ins, the real LLM's settings or Bedrock's.
async fn processor_overrides(
    llm: &LlmMode,
    base_url: &str,
) -> Result<Vec<(&'static str, String)>, String> {
    let mut overrides = vec![("META_API_BASE_URL", format!("{base_url}/graph"))];
    match llm {
        LlmMode::StandIn => {
            overrides.push(("LLM_BASE_URL", format!("{base_url}/llm/v1")));
            overrides.push((
                "TRANSCRIPTION_BASE_URL",
                format!("{base_url}/transcription/v1"),
            ));
        }
        LlmMode::Real {
            provider,
            model,
            base_url: llm_base,
            ..
        } => {
            overrides.push(("LLM_PROVIDER", provider.clone()));
            if let Some(model) = model {
                overrides.push(("LLM_MODEL", model.clone()));
            }
            if let Some(llm_base) = llm_base {
                overrides.push(("LLM_BASE_URL", llm_base.clone()));
            }
        }
        LlmMode::Bedrock(bedrock) => {
            overrides.extend(bedrock.processor_env(base_url).await?);
            if bedrock.credentials.is_none() {
                overrides.push((
                    "TRANSCRIPTION_BASE_URL",
                    format!("{base_url}/transcription/v1"),
                ));
            }
        }
    }
    Ok(overrides)
}
