# The two commands a newcomer needs are `make local` and `make test`; see README.md.
.PHONY: test cargo-test lint-template lambda-build local

# Runs every test, unit and integration, against a moto server this command starts and stops;
# lints the SAM template; builds the functions as Lambda runs them. Offline but for the
# package registries that tests/python-env.sh installs the Python tools from on first use.
test: lint-template cargo-test lambda-build

cargo-test:
	tests/with-moto.sh cargo test --workspace

# cfn-lint and `sam validate --lint`, offline, with dummy credentials.
lint-template:
	tests/lint-template.sh

# `cargo lambda build --release` for this machine's architecture (x86_64 in CI); for Lambda's
# arm64 (the template's Architectures), run `tests/lambda-build.sh --arm64`.
lambda-build:
	tests/lambda-build.sh

local:
	@echo "The local stack arrives with issue 6; see README.md." >&2
	@exit 1
