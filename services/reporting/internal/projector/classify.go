package projector

import (
	"errors"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/parley-dev/parley/libs/eventbus"
)

// badData are the ClickHouse exception codes that refuse the inserted data
// itself: inserting the same rows again can never succeed.
var badData = map[int32]string{
	6:   "CANNOT_PARSE_TEXT",
	26:  "CANNOT_PARSE_QUOTED_STRING",
	27:  "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
	38:  "CANNOT_PARSE_DATE",
	41:  "CANNOT_PARSE_DATETIME",
	53:  "TYPE_MISMATCH",
	69:  "ARGUMENT_OUT_OF_BOUND",
	70:  "CANNOT_CONVERT_TYPE",
	72:  "CANNOT_PARSE_NUMBER",
	117: "INCORRECT_DATA",
	128: "TOO_LARGE_ARRAY_SIZE",
	131: "TOO_LARGE_STRING_SIZE",
	190: "SIZES_OF_ARRAYS_DONT_MATCH",
	321: "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE",
	349: "CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN",
	395: "FUNCTION_THROW_IF_VALUE_IS_NON_ZERO",
	469: "VIOLATED_CONSTRAINT",
}

// Classify marks ClickHouse's refusals of the data (badData) permanent, so
// the partition consumer dead-letters the event and holds its conversation;
// everything else (connection failures, timeouts, server overload, a
// missing table) stays transient and pauses the projector.
func Classify(err error) error {
	var ex *clickhouse.Exception
	if errors.As(err, &ex) {
		if _, bad := badData[ex.Code]; bad {
			return eventbus.Permanent(err)
		}
	}
	return err
}
