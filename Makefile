# The two commands a newcomer needs are `make local` and `make test`; see README.md.
# `make cost` is an extra: what the stack costs per million messages (README "Cost").
.PHONY: test cargo-test browser-test infra-test infra-moto-test lint-template sam-build lambda-build local cost

# Every test: the deploy scripts offline and against moto, the template lint, unit and
# integration tests against a moto server started and stopped for them, the simulator page in
# headless Chromium, and the functions built by the same `sam build` that deploys them. Offline
# but for the package registries the project's own scripts install from on first use (PyPI, npm,
# Debian for Chromium).
test: infra-test infra-moto-test lint-template cargo-test browser-test sam-build

cargo-test:
	tests/with-moto.sh cargo test --workspace

# The simulator page of the local stack, in headless Chromium; uses the binaries cargo-test built.
browser-test:
	tests/with-moto.sh tests/browser/run.sh

# The infra/ scripts against a fake AWS CLI, and samconfig.toml against template.yaml.
infra-test:
	infra/test-scripts.sh

# infra/numbers.sh and infra/user-data.sh with the real AWS CLI (tests/requirements.txt) against a
# moto server: settings round trips, a user's export and delete.
infra-moto-test: tests/with-moto.sh infra/test-against-moto.sh
	tests/with-moto.sh infra/test-against-moto.sh

# cfn-lint and `sam validate --lint`, offline, with dummy credentials.
lint-template:
	tests/lint-template.sh

# `sam build` as README tells users to run it (samconfig.toml's settings), offline, for this
# machine's architecture (the template's Architecture parameter; x86_64 in CI).
sam-build:
	tests/sam-build.sh

# `cargo lambda build --release` for this machine's architecture (x86_64 in CI); for Lambda's
# arm64 (the template's Architectures), run `tests/lambda-build.sh --arm64`.
lambda-build:
	tests/lambda-build.sh

# The whole bot on this machine, with the WhatsApp simulator at http://127.0.0.1:8787/.
# ARGS=--terminal reads messages from standard input instead; see README.md.
local:
	cargo build --workspace --bins
	MOTO_SERVER="$$(tests/python-env.sh)/bin/moto_server" cargo run -q -p local-stack --bin local-stack -- $(ARGS)

# The cost report: 50 users x 20 turns through the functions' release binaries against a moto
# server, every AWS request metered, priced per million inbound messages at the list prices in
# tests/src/cost/prices.rs. ARGS="--users 5 --turns 3" for a quick run; ARGS=--help for the rest.
cost:
	cargo build --release -p webhook -p processor -p alerter --bins
	cargo build -p local-stack --bin cost
	tests/with-moto.sh cargo run -q -p local-stack --bin cost -- --binaries release $(ARGS)
