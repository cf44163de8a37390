#!/usr/bin/env bash
# Starts SES verification of the alert mails' sender (and, with --recipients, of their
# recipients) in the stack's region, and says whether the account is still in the SES sandbox.
# See --help.
set -euo pipefail

prog=verify-ses-sender.sh
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/common.sh"

usage() {
  cat <<'EOF'
Usage: infra/verify-ses-sender.sh [options] [ADDRESS_OR_DOMAIN...]

Starts Amazon SES verification of each address or domain (aws sesv2 create-email-identity) in
the stack's region. Without arguments: the AlertFromEmail of the samconfig environment, plus
its AlertEmail recipients with --recipients.

  - An address gets a mail from AWS with a link: click it (within 24 hours) to verify it.
  - A domain gets three DKIM CNAME records to add to its DNS zone; every address of a
    verified domain can send.

While the account is in the SES sandbox (each region on its own), SES sends only to verified
recipients, at most 200 mails a day: verify the on-call addresses too (--recipients), or
request production access (the script prints how).

Options:
  --recipients         also verify the AlertEmail recipients of the samconfig environment
  --status             only show the verification status; start nothing
EOF
  common_opts_help
  cat <<'EOF'
  -h, --help           this text

Needs the AWS CLI (and python3 to read samconfig.toml). AWS permissions:
ses:CreateEmailIdentity, ses:GetEmailIdentity, ses:GetAccount.
EOF
}

status_only=0
recipients=0
identities=()
while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --status) status_only=1; shift ;;
    --recipients) recipients=1; shift ;;
    --config-env | --config-file | --stack-name | --region | --profile)
      set_common_opt "$@"
      shift 2
      ;;
    -*) die "unknown option: $1 (see --help)" ;;
    *) identities+=("$1"); shift ;;
  esac
done

resolve_target 0

# Without arguments: the addresses of the samconfig environment.
if [ ${#identities[@]} -eq 0 ]; then
  from=$(samconfig_query parameter AlertFromEmail) || die "cannot read $opt_config_file"
  [ -n "$from" ] || die "no AlertFromEmail in environment '$opt_config_env' of $opt_config_file: pass the address"
  identities+=("$from")
  if [ "$recipients" = 1 ]; then
    to=$(samconfig_query parameter AlertEmail) || die "cannot read $opt_config_file"
    [ -n "$to" ] || die "no AlertEmail in environment '$opt_config_env' of $opt_config_file"
    IFS=',' read -r -a list <<<"$to"
    for address in "${list[@]}"; do
      address=$(printf '%s' "$address" | tr -d '[:space:]')
      [ -n "$address" ] && identities+=("$address")
    done
  fi
fi

for identity in "${identities[@]}"; do
  case "$identity" in
    *@example.com | *@example.org | *@example.net | example.com | example.org | example.net)
      die "$identity is a placeholder: put your own address in $opt_config_file (AlertFromEmail, AlertEmail) or pass it"
      ;;
  esac
  if ! printf '%s' "$identity" | grep -Eq '^([^[:space:]@,]+@)?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$'; then
    die "'$identity' is neither an e-mail address nor a domain"
  fi
done

need_cmd aws "install the AWS CLI, see infra/README.md"
region_text=${AWS_REGION:-${AWS_DEFAULT_REGION:-the AWS CLI default region}}

errfile=$(mktemp "${TMPDIR:-/tmp}/verify-ses.XXXXXX")
trap 'rm -f "$errfile"' EXIT

# status IDENTITY: prints the verification state in words.
status() {
  local verified
  if verified=$(aws sesv2 get-email-identity --email-identity "$1" \
    --query VerifiedForSendingStatus --output text 2>"$errfile"); then
    case "$verified" in
      True | true) echo "verified" ;;
      *) echo "pending (not verified yet)" ;;
    esac
  elif grep -q NotFoundException "$errfile"; then
    echo "not started"
  else
    cat "$errfile" >&2
    echo "unknown (see the error above)"
  fi
}

echo "SES identities in $region_text:"
for identity in "${identities[@]}"; do
  if [ "$status_only" = 1 ]; then
    echo "  $identity: $(status "$identity")"
    continue
  fi
  if tokens=$(aws sesv2 create-email-identity --email-identity "$identity" \
    --query 'DkimAttributes.Tokens' --output text 2>"$errfile"); then
    case "$identity" in
      *@*)
        echo "  $identity: verification started; AWS mails a link to this address, click it within 24 hours."
        ;;
      *)
        echo "  $identity: verification started; add these CNAME records to the domain's DNS:"
        for token in $tokens; do
          echo "      ${token}._domainkey.${identity}  CNAME  ${token}.dkim.amazonses.com"
        done
        ;;
    esac
  elif grep -q AlreadyExistsException "$errfile"; then
    echo "  $identity: already created earlier: $(status "$identity")"
  else
    cat "$errfile" >&2
    die "could not start the verification of $identity"
  fi
done

echo
if production=$(aws sesv2 get-account --query ProductionAccessEnabled --output text 2>"$errfile"); then
  case "$production" in
    True | true)
      echo "This account has SES production access in $region_text: any recipient can get mail."
      exit 0
      ;;
    *) echo "This account is in the SES sandbox in $region_text." ;;
  esac
else
  echo "Could not read the SES account status (ses:GetAccount); if it is in the sandbox:"
fi
cat <<'EOF'
In the sandbox, SES sends only to verified addresses or domains, at most 200 mails a day and
one a second. Either:
  - verify every recipient too: infra/verify-ses-sender.sh --recipients (each gets a link), or
  - request production access, in the SES console (Account dashboard > Request production
    access), or with:
      aws sesv2 put-account-details --production-access-enabled --mail-type TRANSACTIONAL \
        --website-url https://your.site --contact-language EN \
        --use-case-description "Operational alerts of our WhatsApp assistant to our on-call team"
    AWS answers within about a day.
EOF
