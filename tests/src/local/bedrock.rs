//! `LLM_PROVIDER=bedrock make local`: Amazon Bedrock answers through the Converse API. With AWS
//! credentials on this machine (`AWS_ACCESS_KEY_ID`, `AWS_PROFILE` or `~/.aws/credentials`), the
//! real Bedrock of the region answers, the processor signing with those credentials; without
//! them, the offline Converse stand-in (in [`super::offline`]) does, checking the signatures
//! of the local stack's dummy credentials as Bedrock would.
//!
//! The whole local stack then lives in Bedrock's region (moto takes any region), so that the
//! processor's one AWS configuration signs for the region its Bedrock endpoint is in.

use aws_sdk_sqs::config::ProvideCredentials;

/// The region when neither `AWS_REGION` nor `AWS_DEFAULT_REGION` says one.
pub const DEFAULT_REGION: &str = "us-east-1";
/// The local stack's dummy credentials (moto takes any), which the offline stand-in expects.
pub const LOCAL_CREDENTIALS: (&str, &str) = ("local", "local");
/// The path under the local stack's URL where the offline Converse stand-in answers.
pub const STAND_IN_PATH: &str = "/bedrock";

/// Where the AWS credentials for real Bedrock come from (never the credentials themselves).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` in the environment.
    Environment,
    /// The named profile of `AWS_PROFILE`.
    Profile(String),
    /// The default profile of the shared credentials file.
    CredentialsFile,
}

/// Bedrock's settings for the local stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BedrockMode {
    /// The region: `AWS_REGION`, else `AWS_DEFAULT_REGION`, else [`DEFAULT_REGION`].
    pub region: String,
    /// `LLM_MODEL`, when set; otherwise the processor's default for the region
    /// ([`shared::llm::bedrock::default_model`]).
    pub model: Option<String>,
    /// `GUARDRAIL_ID` and `GUARDRAIL_VERSION`, passed on when set.
    pub guardrail: Vec<(&'static str, String)>,
    /// Real Bedrock with credentials from there, or the offline stand-in with `None`.
    pub credentials: Option<CredentialSource>,
}

impl BedrockMode {
    /// The settings from `var` (the environment), `credentials_file` telling whether the shared
    /// credentials file exists.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>, credentials_file: bool) -> Self {
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let credentials = if var("AWS_ACCESS_KEY_ID").is_some() {
            Some(CredentialSource::Environment)
        } else if let Some(profile) = var("AWS_PROFILE") {
            Some(CredentialSource::Profile(profile))
        } else {
            credentials_file.then_some(CredentialSource::CredentialsFile)
        };
        Self {
            region: var("AWS_REGION")
                .or_else(|| var("AWS_DEFAULT_REGION"))
                .unwrap_or_else(|| DEFAULT_REGION.to_owned()),
            model: var("LLM_MODEL"),
            guardrail: ["GUARDRAIL_ID", "GUARDRAIL_VERSION"]
                .into_iter()
                .filter_map(|name| var(name).map(|value| (name, value)))
                .collect(),
            credentials,
        }
    }

    /// The settings from the process's environment and `~/.aws/credentials` (or
    /// `AWS_SHARED_CREDENTIALS_FILE`).
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok();
        let file = var("AWS_SHARED_CREDENTIALS_FILE")
            .filter(|f| !f.is_empty())
            .map(std::path::PathBuf::from)
            .or_else(|| {
                var("HOME").map(|home| std::path::Path::new(&home).join(".aws/credentials"))
            });
        Self::from_vars(var, file.is_some_and(|f| f.is_file()))
    }

    /// Real Bedrock's endpoint for the region.
    pub fn endpoint(&self) -> String {
        format!("https://bedrock-runtime.{}.amazonaws.com", self.region)
    }

    /// One line saying who answers, and where (never a credential).
    pub fn describe(&self) -> String {
        let model = self
            .model
            .clone()
            .unwrap_or_else(|| shared::llm::bedrock::default_model(Some(&self.region)));
        let guardrail = match self
            .guardrail
            .iter()
            .find(|(name, _)| *name == "GUARDRAIL_ID")
        {
            Some((_, id)) => format!(", guardrail {id}"),
            None => String::new(),
        };
        match &self.credentials {
            Some(source) => format!(
                "Amazon Bedrock answers: {model} in {} ({}){guardrail}, with the AWS credentials of {}",
                self.region,
                self.endpoint(),
                match source {
                    CredentialSource::Environment => "AWS_ACCESS_KEY_ID".to_owned(),
                    CredentialSource::Profile(name) => format!("profile {name}"),
                    CredentialSource::CredentialsFile => "the default profile".to_owned(),
                }
            ),
            None => format!(
                "the offline Bedrock Converse stand-in answers ({model} in {}{guardrail}): no AWS \
                 credentials found (set AWS_PROFILE or AWS_ACCESS_KEY_ID for real Bedrock)",
                self.region
            ),
        }
    }

    /// The processor's environment for Bedrock: the provider, model and guardrail, the
    /// endpoint (the region's, or the stand-in's under `base_url`) and, for real Bedrock, the
    /// credentials resolved from their source in place of the dummy ones.
    pub async fn processor_env(
        &self,
        base_url: &str,
    ) -> Result<Vec<(&'static str, String)>, String> {
        let mut env = vec![("LLM_PROVIDER", "bedrock".to_owned())];
        if let Some(model) = &self.model {
            env.push(("LLM_MODEL", model.clone()));
        }
        env.extend(self.guardrail.iter().cloned());
        match &self.credentials {
            None => {
                env.push((
                    "AWS_ENDPOINT_URL_BEDROCK_RUNTIME",
                    format!("{base_url}{STAND_IN_PATH}"),
                ));
            }
            Some(_) => {
                env.push(("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", self.endpoint()));
                env.extend(self.resolve_credentials().await?);
            }
        }
        Ok(env)
    }

    /// The credentials of the default chain (environment, then profile), resolved here rather
    /// than in the processor, whose `AWS_ENDPOINT_URL` points at moto: a profile that assumes a
    /// role must reach the real STS. Temporary credentials are not refreshed.
    async fn resolve_credentials(&self) -> Result<Vec<(&'static str, String)>, String> {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(self.region.clone()))
            .load()
            .await;
        let provider = config
            .credentials_provider()
            .ok_or("no AWS credentials provider")?;
        let credentials = provider
            .provide_credentials()
            .await
            .map_err(|e| format!("the AWS credentials for Bedrock cannot be read: {e}"))?;
        let mut env = vec![
            ("AWS_ACCESS_KEY_ID", credentials.access_key_id().to_owned()),
            (
                "AWS_SECRET_ACCESS_KEY",
                credentials.secret_access_key().to_owned(),
            ),
        ];
        if let Some(token) = credentials.session_token() {
            env.push(("AWS_SESSION_TOKEN", token.to_owned()));
        }
        Ok(env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(vars: &[(&str, &str)], file: bool) -> BedrockMode {
        BedrockMode::from_vars(
            |name| {
                vars.iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| (*v).to_owned())
            },
            file,
        )
    }

    #[test]
    fn credentials_are_found_in_the_environment_a_profile_or_the_file() {
        let keys = [("AWS_ACCESS_KEY_ID", "AKID"), ("AWS_PROFILE", "dev")];
        assert_eq!(
            mode(&keys, true).credentials,
            Some(CredentialSource::Environment)
        );
        assert_eq!(
            mode(&keys[1..], true).credentials,
            Some(CredentialSource::Profile("dev".into()))
        );
        assert_eq!(
            mode(&[], true).credentials,
            Some(CredentialSource::CredentialsFile)
        );
        assert_eq!(mode(&[("AWS_ACCESS_KEY_ID", " ")], false).credentials, None);
    }

    #[test]
    fn the_region_model_and_guardrail_come_from_the_environment() {
        let default = mode(&[], false);
        assert_eq!(default.region, "us-east-1");
        assert_eq!(default.model, None);
        assert!(default.guardrail.is_empty());
        let set = mode(
            &[
                ("AWS_DEFAULT_REGION", "eu-west-3"),
                ("LLM_MODEL", "eu.amazon.nova-micro-v1:0"),
                ("GUARDRAIL_ID", "gr1"),
                ("GUARDRAIL_VERSION", "2"),
            ],
            false,
        );
        assert_eq!(set.region, "eu-west-3");
        assert_eq!(
            set.endpoint(),
            "https://bedrock-runtime.eu-west-3.amazonaws.com"
        );
        assert_eq!(
            set.guardrail,
            [
                ("GUARDRAIL_ID", "gr1".into()),
                ("GUARDRAIL_VERSION", "2".into())
            ]
        );
        assert_eq!(
            mode(
                &[("AWS_REGION", "ap-south-1"), ("AWS_DEFAULT_REGION", "x")],
                false
            )
            .region,
            "ap-south-1"
        );
    }

    #[tokio::test]
    async fn the_offline_stand_in_gets_the_endpoint_and_no_credentials() {
        let offline = mode(&[("LLM_MODEL", "m"), ("GUARDRAIL_ID", "g")], false);
        let env = offline
            .processor_env("http://127.0.0.1:8787")
            .await
            .unwrap();
        assert_eq!(
            env,
            [
                ("LLM_PROVIDER", "bedrock".to_owned()),
                ("LLM_MODEL", "m".to_owned()),
                ("GUARDRAIL_ID", "g".to_owned()),
                (
                    "AWS_ENDPOINT_URL_BEDROCK_RUNTIME",
                    "http://127.0.0.1:8787/bedrock".to_owned()
                ),
            ]
        );
        assert!(
            offline
                .describe()
                .contains("offline Bedrock Converse stand-in")
        );
        assert!(offline.describe().contains("m in us-east-1, guardrail g"));
    }

    #[test]
    fn the_banner_names_the_source_never_a_credential() {
        let real = mode(
            &[
                ("AWS_ACCESS_KEY_ID", "AKIDSECRETLOOKING"),
                ("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI"),
                ("AWS_REGION", "eu-central-1"),
            ],
            false,
        );
        let banner = real.describe();
        assert!(
            banner.starts_with("Amazon Bedrock answers: eu.amazon.nova-lite-v1:0 in eu-central-1"),
            "the processor's default model for the region: {banner}"
        );
        assert!(banner.contains("https://bedrock-runtime.eu-central-1.amazonaws.com"));
        assert!(!banner.contains("AKIDSECRETLOOKING") && !banner.contains("wJalr"));
        assert!(!format!("{real:?}").contains("AKIDSECRETLOOKING"));
    }
}
