package stack

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
)

func timestampAt(t time.Time) *timestamppb.Timestamp { return timestamppb.New(t) }
