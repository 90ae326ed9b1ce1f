module github.com/parley-dev/parley/services/ingest

go 1.26.0

require (
	github.com/parley-dev/parley/libs v0.0.0
	github.com/parley-dev/parley/proto v0.0.0
)

replace (
	github.com/parley-dev/parley/libs => ../../libs
	github.com/parley-dev/parley/proto => ../../proto
)
