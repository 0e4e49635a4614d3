# The two commands of the README, and the stack on its own.
.PHONY: demo test bench stack-up stack-down

demo:        ## run the whole pipeline on the local stack (CSV=rows.csv to load your own rows)
	infra/local/demo.sh $(CSV)

test:        ## every check and test, against a private local stack
	infra/local/test.sh

bench:       ## throughput and memory against COPY and a typical Python job (ARGS="--sizes 100000")
	infra/local/bench.sh $(ARGS)

stack-up:
	infra/local/stack.sh up

stack-down:
	infra/local/stack.sh down
