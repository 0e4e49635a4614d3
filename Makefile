# The two commands of the README, and the stack on its own.
.PHONY: demo test bench soak fuzz real-smoke stack-up stack-down

demo:        ## run the whole pipeline on the local stack (CSV=rows.csv to load your own rows; MODE=stream for stream mode)
	MODE=$(or $(MODE),batch) infra/local/demo.sh $(CSV)

test:        ## every check and test, against a private local stack
	infra/local/test.sh

bench:       ## throughput and memory against COPY and a typical Python job (case, then a mapped eleven-column table), then stream freshness and scale (ARGS="--sizes 100000", ARGS="--stream-only", ARGS="--tables-only")
	infra/local/bench.sh $(ARGS)

soak:        ## the long reliability run: 1,000 fault schedules (SCHEDULES=700 STREAM_SCHEDULES=300 SEED=... CASES=100000)
	infra/local/soak.sh

fuzz:        ## cargo fuzz on message parsing and row validation / SQL literals (FUZZ_SECONDS=300 per target)
	infra/local/fuzz.sh $(FUZZ_SECONDS)

real-smoke:  ## by hand, never in CI: the product's Snowflake statements against a REAL account (SNOWFLAKE_* from the environment), on a scratch table
	cargo run --quiet --locked -p countries-cli --bin countries -- real-smoke $(ARGS)

stack-up:
	infra/local/stack.sh up

stack-down:
	infra/local/stack.sh down
