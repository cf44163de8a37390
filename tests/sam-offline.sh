# Sourced by the scripts that run SAM CLI in tests: sets `venv` (the project's Python
# environment, with SAM CLI and cfn-lint) and makes SAM CLI work offline. Nothing is let reach
# AWS: dummy credentials, AWS clients pointed at a closed loopback port, SAM CLI's telemetry and
# its weekly version check turned off.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$("$root/tests/python-env.sh")"
sam_home="$(mktemp -d)"
trap 'rm -rf "$sam_home"' EXIT
# SAM CLI keeps its settings in this folder; a fresh one with telemetry off and a version check
# dated now (a float: SAM ignores an integer there) means that it sends no metrics and does not
# ask PyPI for a newer release. Checked with strace: `sam validate --lint` makes no connect() call.
printf '{"telemetryEnabled": false, "lastVersionCheck": %s.0}\n' "$(date +%s)" >"$sam_home/metadata.json"
export __SAM_CLI_APP_DIR="$sam_home" SAM_CLI_TELEMETRY=0
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_SESSION_TOKEN=testing
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true
# Should any AWS client try to call out after all, it fails on this closed port instead.
export AWS_ENDPOINT_URL=http://127.0.0.1:9
