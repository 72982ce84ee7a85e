package graph

import (
	"github.com/orchard-msp/orchard/ent"
	"github.com/orchard-msp/orchard/graph/domain"
	"github.com/orchard-msp/orchard/graph/model"
	"github.com/orchard-msp/orchard/modules/apple"
)

// licenceRequest turns assignLicences' input into the domain's request.
func licenceRequest(in model.LicenceInput) domain.LicenceRequest {
	req := domain.LicenceRequest{TokenID: in.TokenID, SerialNumbers: in.SerialNumbers, ClientUserIDs: in.ClientUserIDs}
	for _, a := range in.Assets {
		id := apple.AssetID{AdamID: a.AdamID, PricingParam: "STDQ"}
		if a.PricingParam != nil {
			id.PricingParam = *a.PricingParam
		}
		req.Assets = append(req.Assets, id)
	}
	return req
}

func operationPayload(op *ent.LicenceOperation, err error) (*model.LicenceOperationPayload, error) {
	if err != nil {
		return nil, err
	}
	return &model.LicenceOperationPayload{Operation: op}, nil
}
