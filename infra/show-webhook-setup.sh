#!/usr/bin/env bash
# Prints what to type into Meta's webhook settings: the callback URL (stack output WebhookUrl)
# and the verify token (META_VERIFY_TOKEN, read from the stack's secret). Showing the verify
# token is deliberate: it is typed into Meta's dashboard, and it only proves to Meta that the
# URL is yours. No other value of the secret is printed. See --help.
set -euo pipefail
set +x

prog=show-webhook-setup.sh
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/common.sh"

usage() {
  cat <<'EOF'
Usage: infra/show-webhook-setup.sh [options]

Prints the callback URL and the verify token to register in Meta's App Dashboard
(WhatsApp > Configuration > Webhook). The verify token is printed on purpose: you type it into
Meta's dashboard. The app secret and the access tokens are never printed.

Options:
  --check              also run the verification handshake against the deployed webhook,
                       as Meta will (GET with hub.mode, hub.verify_token, hub.challenge)
EOF
  common_opts_help
  cat <<'EOF'
  -h, --help           this text

Needs the AWS CLI and python3. AWS permissions: cloudformation:DescribeStacks, and
secretsmanager:GetSecretValue on the stack's secret.
EOF
}

check=0
while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --check) check=1; shift ;;
    --config-env | --config-file | --stack-name | --region | --profile)
      set_common_opt "$@"
      shift 2
      ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

need_cmd aws "install the AWS CLI, see infra/README.md"
need_cmd python3 "it reads the secret's JSON value"
resolve_target 1

url=$(stack_output WebhookUrl)
secret_arn=$(stack_output SecretArn)

# The template's WebhookFrontDoor parameter decides which of the two serves the URL.
case "$url" in
  *.lambda-url.*) front_door="a Lambda function URL (WebhookFrontDoor=FunctionUrl)" ;;
  *.execute-api.*) front_door="API Gateway (WebhookFrontDoor=ApiGateway)" ;;
  *) front_door="unknown (neither API Gateway nor a Lambda function URL)" ;;
esac

# The secret's JSON goes from the AWS CLI to python through a pipe; only the verify token
# comes out.
verify_token=$(
  aws secretsmanager get-secret-value --secret-id "$secret_arn" \
    --query SecretString --output json |
    python3 -c '
import json, sys
try:
    value = json.loads(json.load(sys.stdin))
except (ValueError, TypeError):
    sys.exit("the secret value is not JSON (its content is not shown)")
token = value.get("META_VERIFY_TOKEN") if isinstance(value, dict) else None
print(token if isinstance(token, str) else "")
'
) || die "cannot read META_VERIFY_TOKEN from $secret_arn"
[ -n "$verify_token" ] || die "the secret $secret_arn has no META_VERIFY_TOKEN; set one with infra/put-secret.sh"

cat <<EOF
Webhook of $(target_description)

In Meta's App Dashboard, open WhatsApp > Configuration, and under Webhook press Edit:

  Callback URL:  $url
  Verify token:  $verify_token

The URL is served by $front_door. A deploy that changes WebhookFrontDoor
changes the URL: enter the new one here again.

Press "Verify and save": Meta calls the URL once with the token, and the webhook answers.
Then, under "Webhook fields", subscribe to: messages

The verify token is shown because you type it into Meta's dashboard; it is not the app
secret, which signs Meta's deliveries and is never shown.
EOF

if [ "$check" = 1 ]; then
  echo
  echo "Checking the handshake as Meta will..."
  # URL and token reach python through its environment, not its command line.
  WEBHOOK_URL=$url VERIFY_TOKEN=$verify_token python3 -c '
import os, secrets, sys, urllib.error, urllib.parse, urllib.request
challenge = secrets.token_hex(8)
query = urllib.parse.urlencode({
    "hub.mode": "subscribe",
    "hub.verify_token": os.environ["VERIFY_TOKEN"],
    "hub.challenge": challenge,
})
try:
    with urllib.request.urlopen(os.environ["WEBHOOK_URL"] + "?" + query, timeout=15) as response:
        status, body = response.status, response.read().decode("utf-8", "replace")
except urllib.error.HTTPError as err:
    status, body = err.code, ""
except OSError as err:
    sys.exit(f"the webhook could not be reached: {err}")
if status == 200 and body == challenge:
    print("OK: the webhook echoed the challenge, so Meta will accept it.")
else:
    sys.exit(f"FAILED: HTTP {status}; expected 200 with the challenge. See infra/README.md, Troubleshooting.")
' || die "handshake check failed"
fi
