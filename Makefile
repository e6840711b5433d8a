# Developer shortcuts. The test command is scripts/test.sh.

.PHONY: bench
# The RPM-limits benchmark (spec §11, issue 14): plain reverse_proxy vs rpm
# admitted, refused, many-users and reservations-off paths, and one user
# driven exactly to its limit from two Caddy processes. Tune with DURATION,
# WARMUP, ROUNDS, CONNECTIONS, USERS, USERS_LARGE, NORESERVE, EXACT_LIMIT,
# EXACT_DURATION, CADDY_GOMAXPROCS, LOADGEN_GOMAXPROCS, UPSTREAM_GOMAXPROCS
# (see bench/README.md).
bench:
	./bench/run.sh
