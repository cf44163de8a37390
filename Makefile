# The two commands a newcomer needs are `make local` and `make test`; see README.md.
.PHONY: test local

# Runs every test, unit and integration, against a moto server this command starts and stops.
test:
	tests/with-moto.sh cargo test --workspace

local:
	@echo "The local stack arrives with issue 6; see README.md." >&2
	@exit 1
