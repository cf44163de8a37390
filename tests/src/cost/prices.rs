//! The list prices the cost report uses: AWS us-east-1 (N. Virginia), arm64 for Lambda (the
//! template's architecture), the first pricing tier of each service, free tiers left out
//! (they are per account and month, not per message). Each price says where it is published and
//! since when; recorded on 2026-12-03. When AWS changes a price, change it here only.

use std::fmt;

/// One price: `usd` dollars per `per` of `unit`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    /// US dollars per `per` units.
    pub usd: f64,
    /// How many units `usd` buys.
    pub per: f64,
    /// What is billed.
    pub unit: &'static str,
    /// Where AWS publishes it.
    pub source: &'static str,
    /// Since when it holds (as far as known), and when it was recorded here.
    pub as_of: &'static str,
}

/// The prices of everything the stack is billed for per message.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prices {
    /// API Gateway HTTP API: $1.00 per million requests (first 300 million a month), each
    /// request metered in 512 KB increments.
    pub http_api_request: Price,
    /// Lambda: $0.20 per million requests, either architecture.
    pub lambda_request: Price,
    /// Lambda on arm64: $0.0000133334 per GB-second (first 7.5 billion GB-seconds a month),
    /// duration rounded up to the millisecond.
    pub lambda_arm64_gb_second: Price,
    /// SQS FIFO queues: $0.50 per million requests, each 64 KB chunk of a payload one request.
    pub sqs_fifo_request: Price,
    /// SQS standard queues: $0.40 per million requests (first 100 billion a month), likewise.
    pub sqs_standard_request: Price,
    /// DynamoDB on-demand, Standard table class: $0.625 per million write request units.
    pub dynamodb_write_unit: Price,
    /// DynamoDB on-demand, Standard table class: $0.125 per million read request units.
    pub dynamodb_read_unit: Price,
    /// CloudWatch Logs, Standard log class: $0.50 per GB ingested (Lambda's logs are "vended
    /// logs", $0.50 per GB for the first 10 TB a month).
    pub logs_ingested_gb: Price,
    /// Secrets Manager: $0.05 per 10,000 API calls (besides $0.40 per secret a month).
    pub secrets_manager_call: Price,
    /// SES: $0.10 per 1,000 emails sent.
    pub ses_email: Price,
}

/// The prices in use.
pub const LIST_PRICES: Prices = Prices {
    http_api_request: Price {
        usd: 1.00,
        per: 1e6,
        unit: "HTTP API request (512 KB increment)",
        source: "https://aws.amazon.com/api-gateway/pricing/",
        as_of: "unchanged since HTTP APIs became generally available (2020-03); recorded 2026-12-03",
    },
    lambda_request: Price {
        usd: 0.20,
        per: 1e6,
        unit: "Lambda request",
        source: "https://aws.amazon.com/lambda/pricing/",
        as_of: "unchanged since 2014; recorded 2026-12-03",
    },
    lambda_arm64_gb_second: Price {
        usd: 0.000_013_333_4,
        per: 1.0,
        unit: "Lambda arm64 GB-second",
        source: "https://aws.amazon.com/lambda/pricing/",
        as_of: "since arm64 launched (2021-09); recorded 2026-12-03",
    },
    sqs_fifo_request: Price {
        usd: 0.50,
        per: 1e6,
        unit: "SQS FIFO request (64 KB chunk)",
        source: "https://aws.amazon.com/sqs/pricing/",
        as_of: "recorded 2026-12-03",
    },
    sqs_standard_request: Price {
        usd: 0.40,
        per: 1e6,
        unit: "SQS standard request (64 KB chunk)",
        source: "https://aws.amazon.com/sqs/pricing/",
        as_of: "recorded 2026-12-03",
    },
    dynamodb_write_unit: Price {
        usd: 0.625,
        per: 1e6,
        unit: "DynamoDB write request unit",
        source: "https://aws.amazon.com/dynamodb/pricing/on-demand/",
        as_of: "since the on-demand price cut of 2024-11-01; recorded 2026-12-03",
    },
    dynamodb_read_unit: Price {
        usd: 0.125,
        per: 1e6,
        unit: "DynamoDB read request unit",
        source: "https://aws.amazon.com/dynamodb/pricing/on-demand/",
        as_of: "since the on-demand price cut of 2024-11-01; recorded 2026-12-03",
    },
    logs_ingested_gb: Price {
        usd: 0.50,
        per: 1.0,
        unit: "GB (2^30 bytes) of logs ingested",
        source: "https://aws.amazon.com/cloudwatch/pricing/",
        as_of: "vended-log tiers for Lambda since 2024-05; recorded 2026-12-03",
    },
    secrets_manager_call: Price {
        usd: 0.05,
        per: 10_000.0,
        unit: "Secrets Manager API call",
        source: "https://aws.amazon.com/secrets-manager/pricing/",
        as_of: "recorded 2026-12-03",
    },
    ses_email: Price {
        usd: 0.10,
        per: 1_000.0,
        unit: "SES email",
        source: "https://aws.amazon.com/ses/pricing/",
        as_of: "recorded 2026-12-03",
    },
};

impl Price {
    /// US dollars per unit.
    pub fn each(&self) -> f64 {
        self.usd / self.per
    }
}

impl fmt::Display for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per = if self.per == 1e6 {
            "million ".to_owned()
        } else if self.per == 1.0 {
            String::new()
        } else {
            format!("{} ", self.per)
        };
        write!(
            f,
            "${} per {per}{}: {} ({})",
            self.usd, self.unit, self.source, self.as_of
        )
    }
}

impl Prices {
    /// Every price, for the report's footer.
    pub fn all(&self) -> [&Price; 10] {
        [
            &self.http_api_request,
            &self.lambda_request,
            &self.lambda_arm64_gb_second,
            &self.sqs_fifo_request,
            &self.sqs_standard_request,
            &self.dynamodb_write_unit,
            &self.dynamodb_read_unit,
            &self.logs_ingested_gb,
            &self.secrets_manager_call,
            &self.ses_email,
        ]
    }
}
