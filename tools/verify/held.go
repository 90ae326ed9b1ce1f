package verify

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/parley-dev/parley/libs/partition"
)

// heldConvs are one tenant's conversations held by partition groups
// (libs/partition's partition_held): each stops at a dead-lettered event
// until an operator releases it.
type heldConvs struct {
	count int
	// first describes the first MaxIDs: group, conversation, blocked
	// stream sequence and reason.
	first []string
}

// readHeld returns the held conversations of the given tenants over every
// partition group in the database.
func readHeld(ctx context.Context, q partition.Querier, tenants map[string]*tenantExp) (map[string]*heldConvs, error) {
	groups, err := partition.Groups(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	out := map[string]*heldConvs{}
	for _, g := range groups {
		held, err := partition.Held(ctx, q, g)
		if err != nil {
			return nil, fmt.Errorf("verify: %w", err)
		}
		list := slices.SortedFunc(maps.Values(held), func(a, b partition.Hold) int {
			return strings.Compare(a.TenantID+"/"+a.ConversationID, b.TenantID+"/"+b.ConversationID)
		})
		for _, h := range list {
			if tenants[h.TenantID] == nil {
				continue
			}
			d := out[h.TenantID]
			if d == nil {
				d = &heldConvs{}
				out[h.TenantID] = d
			}
			d.count++
			if len(d.first) < MaxIDs {
				d.first = append(d.first, fmt.Sprintf("%s %s seq %d: %s", g, h.ConversationID, h.BlockedSeq, h.Reason))
			}
		}
	}
	return out, nil
}

// addHeld adds a row per tenant and a final problem per tenant with held
// conversations.
func (r *Report) addHeld(held map[string]*heldConvs) {
	for _, t := range r.Tenants {
		n := 0
		if d := held[t.Tenant]; d != nil {
			n = d.count
		}
		t.Held = n
		r.Held += n
		t.Rows = append(t.Rows, Row{Check: "held: conversations held by a consumer group", Expected: 0, Actual: n})
	}
	for _, tenant := range slices.Sorted(maps.Keys(held)) {
		d := held[tenant]
		r.Problems = append(r.Problems, Problem{Tenant: tenant, Check: "partition.held", Count: d.count, IDs: d.first,
			Description: "conversations held behind a dead-lettered event (partition_held; released by an operator); first: group, conversation, stream sequence and reason"})
	}
}
