package api

import (
	"context"
	"errors"
	"math"
	"regexp"
	"unicode/utf8"

	"github.com/parley-dev/parley/libs/grpcx"
	reportingv1 "github.com/parley-dev/parley/proto/parley/reporting/v1"
	"github.com/parley-dev/parley/services/reporting/internal/prices"
	"google.golang.org/protobuf/types/known/timestamppb"
)

var currencyCode = regexp.MustCompile(`^[A-Z]{3}$`)

// SetModelPrice creates or replaces one model's price for the tenant.
func (s *Server) SetModelPrice(ctx context.Context, req *reportingv1.SetModelPriceRequest) (*reportingv1.ModelPrice, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	in := req.GetPrice()
	switch {
	case in.GetModel() == "" || len(in.GetModel()) > 128 || !utf8.ValidString(in.GetModel()):
		return nil, grpcx.Invalid("price.model", "required; 1-128 bytes of UTF-8")
	case !currencyCode.MatchString(in.GetCurrency()):
		return nil, grpcx.Invalid("price.currency", "an ISO 4217 code: three upper-case letters, e.g. EUR")
	case in.GetInputMicrosPerMillion() > math.MaxInt64:
		return nil, grpcx.Invalid("price.input_micros_per_million", "at most 9223372036854775807")
	case in.GetOutputMicrosPerMillion() > math.MaxInt64:
		return nil, grpcx.Invalid("price.output_micros_per_million", "at most 9223372036854775807")
	}
	if s.d.Prices == nil {
		return nil, grpcx.FailedPrecondition("MODEL_PRICES_DISABLED", "price", "model prices are not enabled")
	}
	out, err := s.d.Prices.Set(ctx, p.TenantID, prices.Price{Model: in.GetModel(), Currency: in.GetCurrency(),
		InputMicrosPerM: int64(in.GetInputMicrosPerMillion()), OutputMicrosPerM: int64(in.GetOutputMicrosPerMillion())})
	if errors.Is(err, prices.ErrFull) {
		return nil, grpcx.FailedPrecondition("MODEL_PRICES_FULL", "price.model", err.Error())
	}
	if err != nil {
		s.d.Log.ErrorContext(ctx, "model price not set", "err", err)
		return nil, grpcx.Unavailable("model prices cannot be stored right now; retry later")
	}
	return modelPrice(out), nil
}

// ListModelPrices lists the tenant's model prices by model.
func (s *Server) ListModelPrices(ctx context.Context, _ *reportingv1.ListModelPricesRequest) (*reportingv1.ListModelPricesResponse, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	out := &reportingv1.ListModelPricesResponse{}
	if s.d.Prices == nil {
		return out, nil
	}
	list, err := s.d.Prices.List(ctx, p.TenantID)
	if err != nil {
		s.d.Log.ErrorContext(ctx, "model prices not listed", "err", err)
		return nil, grpcx.Unavailable("model prices cannot be read right now; retry later")
	}
	for _, pr := range list {
		out.Prices = append(out.Prices, modelPrice(pr))
	}
	return out, nil
}

func modelPrice(p prices.Price) *reportingv1.ModelPrice {
	return &reportingv1.ModelPrice{Model: p.Model, Currency: p.Currency, InputMicrosPerMillion: uint64(p.InputMicrosPerM),
		OutputMicrosPerMillion: uint64(p.OutputMicrosPerM), UpdatedAt: timestamppb.New(p.UpdatedAt)}
}
