package convstate_test

import (
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"testing"
	"time"

	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"github.com/parley-dev/parley/services/reporting/internal/convstate"
)

// filled returns a state with every field set to a distinct non-zero value,
// found by reflection: a field the binary encoding leaves out comes back
// zero and fails the round trip.
func filled(t *testing.T) *convstate.State {
	t.Helper()
	s := &convstate.State{}
	v := reflect.ValueOf(s).Elem()
	for i := range v.NumField() {
		f, name := v.Field(i), v.Type().Field(i).Name
		switch f.Interface().(type) {
		case string:
			f.SetString(name + " ✓")
		case []string:
			f.Set(reflect.ValueOf([]string{name + "-1", "", name + "-3"}))
		case map[string]string:
			f.Set(reflect.ValueOf(map[string]string{"a": name, "b": "", "": "empty key"}))
		case uint32:
			f.SetUint(uint64(1000 + i))
		case uint64:
			f.SetUint(uint64(1<<40 + i))
		case int64:
			f.SetInt(int64(-1<<40 - i))
		case bool:
			f.SetBool(true)
		case time.Time:
			f.Set(reflect.ValueOf(time.Date(2026, 1, 2, 3, 4, 5, 6789+i, time.UTC)))
		case []uint64:
			f.Set(reflect.ValueOf([]uint64{0, 1, ^uint64(0), uint64(i)}))
		case []convstate.Usage:
			f.Set(reflect.ValueOf([]convstate.Usage{{Model: "gpt ✓", Currency: "EUR", CostMicros: -5, InputTokens: 1 << 40, OutputTokens: 7}, {Currency: "USD"}}))
		default:
			t.Fatalf("field %s: type %s has no test value; teach filled and the binary encoding about it", name, f.Type())
		}
	}
	return s
}

func TestBinaryEncodingRoundTripsEveryField(t *testing.T) {
	s := filled(t)
	b, err := s.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var got convstate.State
	if err := got.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*s, got) {
		t.Fatalf("round trip changed the state:\n%+v\n%+v", *s, got)
	}
	// Equal states encode equally (map order does not leak).
	for range 20 {
		again, _ := got.MarshalBinary()
		if string(again) != string(b) {
			t.Fatal("encoding is not deterministic")
		}
	}
	// Every field is non-zero and the empty state still decodes.
	for _, st := range []*convstate.State{{}, convstate.New("acme", "c1")} {
		b, _ := st.MarshalBinary()
		var back convstate.State
		if err := back.UnmarshalBinary(b); err != nil || !reflect.DeepEqual(*st, back) {
			t.Fatalf("empty state: %v\n%+v\n%+v", err, *st, back)
		}
	}
}

// The binary and the JSON encodings load the same state, so states stored
// as JSON before the binary encoding fold on exactly as before.
func TestBinaryAndJSONLoadTheSameState(t *testing.T) {
	envs := conversation()
	for i, e := range envs {
		e.EventId = fmt.Sprintf("event-%d", i)
	}
	for n := range len(envs) + 1 {
		s := fold(envs[:n])
		js, _ := json.Marshal(s)
		bin, _ := s.MarshalBinary()
		var fromJSON, fromBin convstate.State
		if err := json.Unmarshal(js, &fromJSON); err != nil {
			t.Fatal(err)
		}
		if err := fromBin.UnmarshalBinary(bin); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(fromJSON, fromBin) {
			t.Fatalf("after %d events:\nJSON   %+v\nbinary %+v", n, fromJSON, fromBin)
		}
		extra := ev(40, "ingest", &eventv1.MessagePosted{Role: eventv1.Role_ROLE_VISITOR, Text: "more"})
		extra.EventId = "extra"
		fromJSON.Apply(extra, 1000)
		fromBin.Apply(extra, 1000)
		if !reflect.DeepEqual(fromJSON, fromBin) {
			t.Fatalf("after %d events and one more: diverged", n)
		}
	}
}

func TestBinaryDecodingRejectsDamage(t *testing.T) {
	b, _ := filled(t).MarshalBinary()
	for n := range len(b) {
		var s convstate.State
		if err := s.UnmarshalBinary(b[:n]); err == nil {
			t.Fatalf("a truncated encoding (%d of %d bytes) decoded", n, len(b))
		}
	}
	var s convstate.State
	if err := s.UnmarshalBinary(append(b, 0)); err == nil {
		t.Fatal("trailing bytes accepted")
	}
	bad := append([]byte{}, b...)
	bad[0] = 99
	if err := s.UnmarshalBinary(bad); err == nil {
		t.Fatal("unknown version accepted")
	}
}

func FuzzUnmarshalBinary(f *testing.F) {
	b, _ := fold(conversation()).MarshalBinary()
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		var s convstate.State
		if s.UnmarshalBinary(data) != nil {
			return
		}
		again, err := s.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var back convstate.State
		if err := back.UnmarshalBinary(again); err != nil || !reflect.DeepEqual(s, back) {
			t.Fatalf("re-encoding changed the state: %v", err)
		}
	})
}

// States saved by earlier builds stay readable: testdata/state-v1.bin is
// fold(conversation()) as version 1 wrote it. A change to the encoding
// needs a new version that still decodes this file.
func TestBinaryEncodingVersion1StillDecodes(t *testing.T) {
	b, err := os.ReadFile("testdata/state-v1.bin")
	if err != nil {
		t.Fatal(err)
	}
	var got convstate.State
	if err := got.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if got.TenantID != "acme" || got.ConversationID != "c1" || got.Status != "ended" || got.EndReason != "agent_closed" ||
		!got.StartedAt.Equal(t0) || got.AgentMessages != 2 || got.Variables["plan"] != "pro" || !got.Flagged ||
		got.CostMicros != 1200 || got.LastSeq != uint64(len(conversation())) {
		t.Fatalf("version 1 state decoded as %+v", got)
	}
}
