module github.com/parley-dev/parley/tools

go 1.26.0

require (
	github.com/parley-dev/parley/libs v0.0.0
	github.com/parley-dev/parley/proto v0.0.0
	github.com/parley-dev/parley/services/ingest v0.0.0
	github.com/parley-dev/parley/services/lifecycle v0.0.0
	github.com/parley-dev/parley/services/notification v0.0.0
	github.com/parley-dev/parley/services/reporting v0.0.0
	github.com/parley-dev/parley/services/tagging v0.0.0
)

replace (
	github.com/parley-dev/parley/libs => ../libs
	github.com/parley-dev/parley/proto => ../proto
	github.com/parley-dev/parley/services/ingest => ../services/ingest
	github.com/parley-dev/parley/services/lifecycle => ../services/lifecycle
	github.com/parley-dev/parley/services/notification => ../services/notification
	github.com/parley-dev/parley/services/reporting => ../services/reporting
	github.com/parley-dev/parley/services/tagging => ../services/tagging
)
