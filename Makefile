# Developer shortcuts. The test command is scripts/test.sh.

.PHONY: bench
# The RPM-limits benchmark (spec §11): plain reverse_proxy vs rpm admitted
# and refused paths in one Caddy. Tune with DURATION, WARMUP, ROUNDS,
# CONNECTIONS, CADDY_GOMAXPROCS, LOADGEN_GOMAXPROCS, UPSTREAM_GOMAXPROCS.
bench:
	./bench/run.sh
